// mqtt_publish_rate: the broker's own publish-only QoS 1 rate, the MQTT yardstick of bench/README.md#goals
// ("≥ 0.9 × the broker's own publish-only QoS 1 rate measured in the same run"). One MQTT v5
// client publishes --count messages of --payload bytes to --topic at QoS 1, keeping up to
// --inflight of them unacknowledged (the window refills as PUBACKs arrive), and prints one
// JSON object once every message is acknowledged:
//
//   {"published":N,"acked":N,"rejected":0,"seconds":S,"rate":R,...}
//
// rate = acked / seconds, seconds from the first PUBLISH to the last PUBACK. A PUBACK with a
// reason code below 0x80 counts as acked (0x10 "no matching subscribers" included: nobody
// subscribes in a publish-only run); 0x80 and above as rejected.
//
// Usage: mqtt_publish_rate [--host 127.0.0.1] [--port 1883] [--inflight 1000] [--count N]
//            [--payload 420] [--topic T] [--timeout 60] [--duration S] [--nodelay]
//
// --duration S stops publishing after S seconds (then waits for the outstanding PUBACKs), so a
// benchmark script can give it the same time as coapgate-loadgen without guessing a count; --count
// still caps the total. --timeout bounds the whole run (connect included): past it the tool
// prints what it has, with "timed_out":true, and exits 1. The default payload, 420 bytes, is
// about the size of a coapgate envelope for coapgate-loadgen's 48-byte payload.
//
// libmosquitto runs in its non-threaded mode on the one thread: mosquitto_publish_v5 writes
// each PUBLISH to the socket at once (what coapgate's MQTT sink does too), mosquitto_loop
// reads the PUBACKs. MOSQ_OPT_SEND_MAXIMUM is raised to --inflight so that libmosquitto sends
// rather than queues; the broker's own receive maximum (mosquitto's max_inflight_messages;
// 0 = 65535) must be at least that, or libmosquitto holds the excess back.
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

namespace coapgate::bench {
namespace {

constexpr unsigned kMaxInflight = 65535;  // MQTT's receive maximum is 16 bits
constexpr unsigned kMaxPayload = 256 * 1024;
constexpr int kLoopTimeoutMs = 10;
constexpr int kKeepaliveS = 60;

std::atomic<bool> g_stop{false};

struct Options {
  std::string host = "127.0.0.1";
  int port = 1883;
  unsigned inflight = 1000;
  uint64_t count = 1'000'000;
  unsigned payload = 420;
  std::string topic = "8988280666000000000/bench";  // shaped like coapgate's "{iccid}/{t}"
  unsigned timeout_s = 60;
  double duration_s = 0;  // 0 = no time limit on publishing
  bool nodelay = false;
};

struct State {
  bool connected = false;
  int connack = -1;        // CONNACK reason code, -1 before it arrived
  bool lost = false;
  int lost_rc = 0;
  uint64_t acked = 0;
  uint64_t rejected = 0;
  uint64_t last_ack_ns = 0;
};

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(ts.tv_nsec);
}

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

void OnConnect(mosquitto* /*mosq*/, void* obj, int reason, int /*flags*/,
               const mosquitto_property* /*props*/) {
  auto* state = static_cast<State*>(obj);
  state->connack = reason;
  state->connected = reason == 0;
}

void OnDisconnect(mosquitto* /*mosq*/, void* obj, int rc, const mosquitto_property* /*props*/) {
  auto* state = static_cast<State*>(obj);
  state->connected = false;
  state->lost = true;
  state->lost_rc = rc;
}

void OnPublish(mosquitto* /*mosq*/, void* obj, int /*mid*/, int reason,
               const mosquitto_property* /*props*/) {
  auto* state = static_cast<State*>(obj);
  if (reason < 0x80) {
    ++state->acked;
  } else {
    ++state->rejected;
  }
  state->last_ack_ns = NowNs();
}

void OnStopSignal(int) { g_stop.store(true, std::memory_order_relaxed); }

int Fail(const char* what, int rc) {
  std::fprintf(stderr, "mqtt_publish_rate: %s: %s\n", what, mosquitto_strerror(rc));
  return 1;
}

int Main(int argc, char** argv) {
  Options options;
  CLI::App app{"mqtt_publish_rate: one MQTT v5 client publishing QoS 1 as fast as its window allows"};
  app.add_option("--host", options.host, "broker address");
  app.add_option("--port", options.port, "broker port")->check(CLI::Range(1, 65535));
  app.add_option("--inflight", options.inflight, "unacknowledged publishes at most")
      ->check(CLI::Range(1u, kMaxInflight));
  app.add_option("--count", options.count, "messages to publish")
      ->check(CLI::Range(uint64_t{1}, uint64_t{10'000'000'000}));
  app.add_option("--payload", options.payload, "payload bytes")
      ->check(CLI::Range(0u, kMaxPayload));
  app.add_option("--topic", options.topic, "topic to publish to")
      ->check([](const std::string& t) {
        return !t.empty() && t.find_first_of("+#") == std::string::npos ? "" : "a topic name";
      });
  app.add_option("--timeout", options.timeout_s, "seconds for the whole run, at most")
      ->check(CLI::Range(1u, 3600u));
  app.add_option("--duration", options.duration_s, "stop publishing after this many seconds")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_flag("--nodelay", options.nodelay, "set TCP_NODELAY on the connection");
  CLI11_PARSE(app, argc, argv);

  struct sigaction action{};
  action.sa_handler = OnStopSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  std::vector<char> payload(options.payload);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>('a' + i % 26);

  mosquitto_lib_init();
  State state;
  const std::string client_id = "mqtt_publish_rate-" + std::to_string(getpid());
  mosquitto* mosq = mosquitto_new(client_id.c_str(), /*clean_session=*/true, &state);
  if (mosq == nullptr) {
    std::fprintf(stderr, "mqtt_publish_rate: mosquitto_new failed\n");
    return 1;
  }
  int rc = mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  if (rc != MOSQ_ERR_SUCCESS) return Fail("protocol version", rc);
  rc = mosquitto_int_option(mosq, MOSQ_OPT_SEND_MAXIMUM, static_cast<int>(options.inflight));
  if (rc != MOSQ_ERR_SUCCESS) return Fail("send maximum", rc);
  if (options.nodelay) {
    rc = mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
    if (rc != MOSQ_ERR_SUCCESS) return Fail("TCP_NODELAY", rc);
  }
  mosquitto_connect_v5_callback_set(mosq, OnConnect);
  mosquitto_disconnect_v5_callback_set(mosq, OnDisconnect);
  mosquitto_publish_v5_callback_set(mosq, OnPublish);

  const uint64_t start_ns = NowNs();
  const uint64_t deadline_ns = start_ns + uint64_t{options.timeout_s} * 1'000'000'000;
  rc = mosquitto_connect_bind_v5(mosq, options.host.c_str(), options.port, kKeepaliveS, nullptr,
                                 nullptr);
  if (rc != MOSQ_ERR_SUCCESS) return Fail("connect", rc);
  while (!state.connected) {
    if (state.connack > 0) {
      std::fprintf(stderr, "mqtt_publish_rate: CONNACK refused: %s\n",
                   mosquitto_reason_string(state.connack));
      return 1;
    }
    if (NowNs() >= deadline_ns || g_stop.load(std::memory_order_relaxed)) {
      std::fprintf(stderr, "mqtt_publish_rate: no CONNACK\n");
      return 1;
    }
    rc = mosquitto_loop(mosq, 100, 1);
    if (rc != MOSQ_ERR_SUCCESS) return Fail("waiting for CONNACK", rc);
  }

  // Publish phase: refill the window, then let mosquitto_loop read the PUBACKs.
  const double cpu0 = CpuSeconds();
  const uint64_t begin_ns = NowNs();
  const uint64_t publish_end_ns =
      options.duration_s > 0 ? begin_ns + static_cast<uint64_t>(options.duration_s * 1e9)
                             : UINT64_MAX;
  uint64_t published = 0;
  uint64_t target = options.count;
  bool timed_out = false;
  std::string error;
  while (state.acked + state.rejected < target) {
    const uint64_t now = NowNs();
    if (now >= deadline_ns || g_stop.load(std::memory_order_relaxed)) {
      timed_out = true;
      break;
    }
    if (now >= publish_end_ns) target = published;  // no new ones; wait for the rest
    while (published < target && published - state.acked - state.rejected < options.inflight) {
      rc = mosquitto_publish_v5(mosq, nullptr, options.topic.c_str(),
                                static_cast<int>(payload.size()), payload.data(), 1,
                                /*retain=*/false, nullptr);
      if (rc != MOSQ_ERR_SUCCESS) break;
      ++published;
    }
    if (rc != MOSQ_ERR_SUCCESS) {
      error = std::string("publish: ") + mosquitto_strerror(rc);
      break;
    }
    rc = mosquitto_loop(mosq, kLoopTimeoutMs, 1);
    if (rc != MOSQ_ERR_SUCCESS || state.lost) {
      error = std::string("connection lost: ") +
              mosquitto_strerror(rc != MOSQ_ERR_SUCCESS ? rc : state.lost_rc);
      break;
    }
  }
  const uint64_t end_ns = state.last_ack_ns > begin_ns ? state.last_ack_ns : NowNs();
  const double cpu_s = CpuSeconds() - cpu0;
  const double seconds = static_cast<double>(end_ns - begin_ns) / 1e9;

  if (error.empty()) mosquitto_disconnect_v5(mosq, 0, nullptr);
  mosquitto_destroy(mosq);
  mosquitto_lib_cleanup();

  std::printf(
      "{\"published\":%lu,\"acked\":%lu,\"rejected\":%lu,\"seconds\":%.3f,\"rate\":%.1f,"
      "\"payload\":%u,\"inflight\":%u,\"timed_out\":%s,\"cpu_s\":%.2f%s%s%s}\n",
      published, state.acked, state.rejected, seconds,
      seconds > 0 ? static_cast<double>(state.acked) / seconds : 0.0, options.payload,
      options.inflight, timed_out ? "true" : "false", cpu_s, error.empty() ? "" : ",\"error\":\"",
      error.c_str(), error.empty() ? "" : "\"");
  if (!error.empty()) std::fprintf(stderr, "mqtt_publish_rate: %s\n", error.c_str());
  return timed_out || !error.empty() || state.rejected > 0 ? 1 : 0;
}

}  // namespace
}  // namespace coapgate::bench

int main(int argc, char** argv) { return coapgate::bench::Main(argc, argv); }
