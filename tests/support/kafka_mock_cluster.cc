// kafka_mock_cluster: librdkafka's mock Kafka cluster in a process of its own, for the
// end-to-end tests (tests/e2e), which drive it over stdin/stdout:
//
//   kafka_mock_cluster [--brokers N] [--topic NAME[:PARTITIONS]]...
//
// N defaults to 3, PARTITIONS to 4; topics get replication min(3, N). Brokers listen on
// 127.0.0.1 ephemeral ports. The first stdout line is {"bootstrap":"127.0.0.1:port,..."}.
// Then one command per stdin line, each answered by exactly one JSON line:
//
//   down | up                    every broker down / up                  {"ok":true}
//   rtt MS                       every broker's round-trip time          {"ok":true}
//   produce-errors N ERR         the next N Produce requests (cluster-wide) fail with ERR:
//                                a name as librdkafka spells it without RD_KAFKA_RESP_ERR_
//                                (NOT_ENOUGH_REPLICAS, _TRANSPORT = drop the connection)
//                                or a number                             {"ok":true}
//   consume TOPIC                every record from the beginning to the end of each
//                                partition (bounded 30 s), by partition and offset:
//                                {"records":[{"partition":P,"offset":O,"key":"...",
//                                "value":"...","headers":{"id":"...",...}},...]}
//                                key is null for a keyless record; an unknown topic has no
//                                records; on timeout "error" is added to what was read.
//   quit, or end of input        exit 0
//   anything else                {"ok":false,"error":"..."}
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <strings.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using nlohmann::json;

constexpr int kDefaultBrokers = 3;
constexpr int kDefaultPartitions = 4;
constexpr int16_t kProduceApiKey = 0;
constexpr uint64_t kConsumeBoundMs = 30000;

uint64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

// One line on stdout, flushed: the test reads it as soon as it is written. Invalid UTF-8 in
// record data is replaced rather than thrown on.
void Reply(const json& j) {
  const std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void ReplyOk() { Reply({{"ok", true}}); }
void ReplyError(const std::string& error) { Reply({{"ok", false}, {"error", error}}); }

bool ParseInt(std::string_view text, long long* out) {
  if (text.empty()) return false;
  const std::string s(text);
  char* end = nullptr;
  errno = 0;
  *out = std::strtoll(s.c_str(), &end, 10);
  return errno == 0 && end == s.c_str() + s.size();
}

// "NOT_ENOUGH_REPLICAS", "_TRANSPORT", "RD_KAFKA_RESP_ERR__TRANSPORT" or "-195".
bool ParseError(std::string_view text, rd_kafka_resp_err_t* out) {
  long long number;
  if (ParseInt(text, &number)) {
    *out = static_cast<rd_kafka_resp_err_t>(number);
    return true;
  }
  constexpr std::string_view kPrefix = "RD_KAFKA_RESP_ERR_";
  if (text.size() > kPrefix.size() && text.substr(0, kPrefix.size()) == kPrefix) {
    text.remove_prefix(kPrefix.size());
  }
  const rd_kafka_err_desc* descs;
  size_t count;
  rd_kafka_get_err_descs(&descs, &count);
  for (size_t i = 0; i < count; ++i) {
    if (descs[i].name != nullptr && strncasecmp(descs[i].name, text.data(), text.size()) == 0 &&
        descs[i].name[text.size()] == '\0') {
      *out = descs[i].code;
      return true;
    }
  }
  return false;
}

std::vector<std::string_view> Split(std::string_view line) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

rd_kafka_conf_t* QuietConf() {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[256];
  rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr));  // warnings and worse
  return conf;
}

json Consume(const char* bootstraps, const std::string& topic) {
  json records = json::array();
  char errstr[512];
  rd_kafka_conf_t* conf = QuietConf();
  const std::pair<const char*, const char*> settings[] = {
      {"bootstrap.servers", bootstraps},
      {"group.id", "kafka-mock-cluster-consume"},  // never joined: partitions are assigned
      {"enable.auto.commit", "false"},
      {"enable.partition.eof", "true"},
  };
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return {{"ok", false}, {"error", std::string(name) + ": " + errstr}};
    }
  }
  rd_kafka_t* consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
  if (consumer == nullptr) {
    rd_kafka_conf_destroy(conf);
    return {{"ok", false}, {"error", std::string("consumer: ") + errstr}};
  }
  rd_kafka_poll_set_consumer(consumer);

  int partitions = 0;
  rd_kafka_topic_t* handle = rd_kafka_topic_new(consumer, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* metadata = nullptr;
  std::string error;
  if (rd_kafka_resp_err_t err = rd_kafka_metadata(consumer, 0, handle, &metadata, 5000); err) {
    error = std::string("metadata: ") + rd_kafka_err2str(err);
  } else if (metadata->topic_cnt == 1 && metadata->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    partitions = metadata->topics[0].partition_cnt;
  }  // else an unknown topic: no records
  if (metadata != nullptr) rd_kafka_metadata_destroy(metadata);
  rd_kafka_topic_destroy(handle);

  if (partitions > 0) {
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; ++p) {
      rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_assign(consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
  }

  std::vector<bool> at_end(static_cast<size_t>(partitions), false);
  int ends = 0;
  const uint64_t deadline = NowMs() + kConsumeBoundMs;
  while (ends < partitions && NowMs() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer, 100);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (m->partition >= 0 && m->partition < partitions && !at_end[m->partition]) {
        at_end[m->partition] = true;
        ++ends;
      }
    } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      json r;
      r["partition"] = m->partition;
      r["offset"] = m->offset;
      r["key"] = m->key == nullptr
                     ? json(nullptr)
                     : json(std::string(static_cast<const char*>(m->key), m->key_len));
      r["value"] = m->payload == nullptr
                       ? std::string()
                       : std::string(static_cast<const char*>(m->payload), m->len);
      json headers = json::object();
      rd_kafka_headers_t* hdrs = nullptr;
      if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name;
        const void* value;
        size_t size;
        for (size_t i = 0;
             rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
             ++i) {
          headers[name] =
              value == nullptr ? std::string() : std::string(static_cast<const char*>(value), size);
        }
      }
      r["headers"] = std::move(headers);
      records.push_back(std::move(r));
    } else if (error.empty()) {
      error = rd_kafka_message_errstr(m);  // transient ones are retried by librdkafka
    }
    rd_kafka_message_destroy(m);
  }
  if (ends < partitions) {
    error = "timed out before the end of every partition" + (error.empty() ? "" : ": " + error);
  }
  rd_kafka_consumer_close(consumer);
  rd_kafka_destroy(consumer);

  std::sort(records.begin(), records.end(), [](const json& a, const json& b) {
    return std::pair(a["partition"].get<int>(), a["offset"].get<int64_t>()) <
           std::pair(b["partition"].get<int>(), b["offset"].get<int64_t>());
  });
  json reply = {{"records", std::move(records)}};
  if (ends < partitions) reply["error"] = error;
  return reply;
}

// Serves one command; false on quit.
bool Serve(rd_kafka_mock_cluster_t* cluster, std::string_view line) {
  const std::vector<std::string_view> words = Split(line);
  if (words.empty()) {
    ReplyError("empty command");
    return true;
  }
  const std::string_view command = words[0];
  auto result = [](rd_kafka_resp_err_t err) {
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ReplyOk();
    } else {
      ReplyError(rd_kafka_err2str(err));
    }
  };
  long long number;
  if (command == "quit" && words.size() == 1) return false;
  if (command == "down" && words.size() == 1) {
    result(rd_kafka_mock_broker_set_down(cluster, -1));
  } else if (command == "up" && words.size() == 1) {
    result(rd_kafka_mock_broker_set_up(cluster, -1));
  } else if (command == "rtt" && words.size() == 2 && ParseInt(words[1], &number) && number >= 0 &&
             number <= 3600000) {
    result(rd_kafka_mock_broker_set_rtt(cluster, -1, static_cast<int>(number)));
  } else if (command == "produce-errors" && words.size() == 3 && ParseInt(words[1], &number) &&
             number >= 0 && number <= 100000) {
    rd_kafka_resp_err_t err;
    if (!ParseError(words[2], &err)) {
      ReplyError("unknown error name: " + std::string(words[2]));
      return true;
    }
    const std::vector<rd_kafka_resp_err_t> errors(static_cast<size_t>(number), err);
    rd_kafka_mock_push_request_errors_array(cluster, kProduceApiKey, errors.size(), errors.data());
    ReplyOk();
  } else if (command == "consume" && words.size() == 2) {
    Reply(Consume(rd_kafka_mock_cluster_bootstraps(cluster), std::string(words[1])));
  } else {
    ReplyError("unknown command or bad arguments: " + std::string(line));
  }
  return true;
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "kafka_mock_cluster: %s\nusage: kafka_mock_cluster [--brokers N] "
               "[--topic NAME[:PARTITIONS]]...\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  long long brokers = kDefaultBrokers;
  std::vector<std::pair<std::string, int>> topics;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) return Usage("missing value");
    const std::string_view value = argv[++i];
    if (arg == "--brokers") {
      if (!ParseInt(value, &brokers) || brokers < 1 || brokers > 64) return Usage("bad --brokers");
    } else if (arg == "--topic") {
      const size_t colon = value.rfind(':');
      long long partitions = kDefaultPartitions;
      if (colon != std::string_view::npos && (!ParseInt(value.substr(colon + 1), &partitions) ||
                                              partitions < 1 || partitions > 10000)) {
        return Usage("bad --topic partitions");
      }
      const std::string_view name = value.substr(0, colon);
      if (name.empty()) return Usage("empty --topic name");
      topics.emplace_back(std::string(name), static_cast<int>(partitions));
    } else {
      return Usage("unknown option");
    }
  }

  char errstr[512];
  rd_kafka_conf_t* conf = QuietConf();
  rd_kafka_t* owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (owner == nullptr) {
    std::fprintf(stderr, "kafka_mock_cluster: %s\n", errstr);
    return 1;
  }
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(owner, static_cast<int>(brokers));
  if (cluster == nullptr) {
    std::fprintf(stderr, "kafka_mock_cluster: cannot create the mock cluster\n");
    return 1;
  }
  const int replication = static_cast<int>(std::min(3LL, brokers));
  for (const auto& [name, partitions] : topics) {
    if (rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(cluster, name.c_str(), partitions, replication);
        err) {
      std::fprintf(stderr, "kafka_mock_cluster: topic %s: %s\n", name.c_str(),
                   rd_kafka_err2str(err));
      return 1;
    }
  }
  Reply({{"bootstrap", rd_kafka_mock_cluster_bootstraps(cluster)}});

  char* line = nullptr;
  size_t capacity = 0;
  ssize_t length;
  while ((length = getline(&line, &capacity, stdin)) >= 0) {
    std::string_view text(line, static_cast<size_t>(length));
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
    if (!Serve(cluster, text)) break;
  }
  // No teardown: once a client has been connected, destroying the mock cluster takes about a
  // second, and the test waiting for this process gains nothing from it. The kernel closes
  // the listeners; stdout was flushed after every reply.
  std::free(line);
  std::_Exit(0);
}
