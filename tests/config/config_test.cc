#include "config/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace coapgate::config {
namespace {

constexpr std::string_view kSource = "test.toml";

// The error ParseConfig gives for `text`, checked against the contract every error shares:
// it names the source, and it is one line.
std::string ErrorOf(std::string_view text) {
  auto config = ParseConfig(text, kSource);
  if (config) {
    ADD_FAILURE() << "accepted:\n" << text;
    return {};
  }
  const std::string& error = config.error().message;
  EXPECT_TRUE(error.starts_with(std::string(kSource) + ":")) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  return error;
}

// Expects "test.toml: <key>: ..." containing `reason`.
void ExpectError(std::string_view text, std::string_view key, std::string_view reason) {
  const std::string error = ErrorOf(text);
  const std::string prefix = std::string(kSource) + ": " + std::string(key) + ": ";
  EXPECT_TRUE(error.starts_with(prefix)) << "want key " << key << " in: " << error;
  EXPECT_NE(error.find(reason), std::string::npos) << "want \"" << reason << "\" in: " << error;
}

Config Parse(std::string_view text) {
  auto config = ParseConfig(text, kSource);
  EXPECT_TRUE(config) << config.error().message;
  if (!config) return Config{};
  return std::move(*config);
}

TEST(Config, EmptyTextGivesTheDefaults) {
  const Config config = Parse("");
  EXPECT_EQ(config, Config{});
  ASSERT_EQ(config.server.coap_listen.size(), 1u);
  EXPECT_EQ(config.server.coap_listen[0].host, "0.0.0.0");
  EXPECT_EQ(config.server.coap_listen[0].port, 5683);
  EXPECT_EQ(config.server.coap_listen[0].text, "0.0.0.0:5683");
  ASSERT_EQ(config.server.coaps_listen.size(), 1u);  // docs/configuration.md: coaps:// on 5684 by default
  EXPECT_EQ(config.server.coaps_listen[0], (ListenAddress{"0.0.0.0", 5684, "0.0.0.0:5684"}));
  EXPECT_EQ(config.server.io, IoBackend::kAuto);
  EXPECT_EQ(config.coap.ack, AckMode::kSink);
  EXPECT_EQ(config.coap.max_payload, 1024u);
  ASSERT_EQ(config.sinks.size(), 1u);
  EXPECT_EQ(config.sinks[0].type, "file");
  ASSERT_TRUE(std::holds_alternative<FileSinkConfig>(config.sinks[0].settings));
  EXPECT_EQ(std::get<FileSinkConfig>(config.sinks[0].settings).path, "-");
  EXPECT_EQ(Parse("# only a comment\n\n"), Config{});
  EXPECT_EQ(Parse("[server]\n[coap]\n[devices]\n"), Config{});
}

TEST(Config, ReadsEveryKey) {
  const Config config = Parse(R"(
[server]
coap_listen = ["127.0.0.1:5683", "[::]:5683"]
coaps_listen = ["0.0.0.0:5684"]
shards = 8
io = "recvmmsg"
receive_buffer_bytes = 65536
drain_timeout_ms = 0
takeover_socket = "/run/coapgate/takeover"

[devices]
file = "/etc/coapgate/devices.csv"
state = "/var/lib/coapgate/state.db"
reload_max_removed_percent = 25

[coap]
exchange_lifetime_s = 300
non_lifetime_s = 200
max_payload = 65000
response_budget_ms = 900
ack = "enqueue"
dedup_per_device = 16
dedup_devices = 5
dedup_capacity = 16
inflight_capacity = 16777216
busy_max_age_s = 30

[bootstrap]
coaps_url = "coaps://ingest.example.net:5684"
regenerate_after_s = 0

[energy_saver]
coap_template = "/etc/coapgate/template.json"

[[sinks]]
type = "file"
path = "/var/log/coapgate.jsonl"

[[sinks]]
type = "mqtt"
host = "broker.example.net"
port = 8883
qos = 0
client_id = "coapgate-1"
username = "ingest"
password = "secret"
tls = true
topic_template = "fleet/{iccid}/{t}"
format = "raw"
connections = 64

[[sinks]]
type = "kafka"
brokers = "k1:9092,k2:9092"
topic = "telemetry"
[sinks.properties]
"linger.ms" = "5"
acks = "all"
)");
  const auto& server = config.server;
  ASSERT_EQ(server.coap_listen.size(), 2u);
  EXPECT_EQ(server.coap_listen[0], (ListenAddress{"127.0.0.1", 5683, "127.0.0.1:5683"}));
  EXPECT_EQ(server.coap_listen[1], (ListenAddress{"::", 5683, "[::]:5683"}));
  ASSERT_EQ(server.coaps_listen.size(), 1u);
  EXPECT_EQ(server.coaps_listen[0], (ListenAddress{"0.0.0.0", 5684, "0.0.0.0:5684"}));
  EXPECT_EQ(server.shards, 8);
  EXPECT_EQ(server.io, IoBackend::kRecvmmsg);
  EXPECT_EQ(server.receive_buffer_bytes, 65536u);
  EXPECT_EQ(server.drain_timeout_ms, 0u);
  EXPECT_EQ(server.takeover_socket, "/run/coapgate/takeover");

  EXPECT_EQ(config.devices.file, "/etc/coapgate/devices.csv");
  EXPECT_EQ(config.devices.state, "/var/lib/coapgate/state.db");
  EXPECT_EQ(config.devices.reload_max_removed_percent, 25u);

  const auto& coap = config.coap;
  EXPECT_EQ(coap.exchange_lifetime_s, 300u);
  EXPECT_EQ(coap.non_lifetime_s, 200u);
  EXPECT_EQ(coap.max_payload, 65000u);
  EXPECT_EQ(coap.response_budget_ms, 900u);
  EXPECT_EQ(coap.ack, AckMode::kEnqueue);
  EXPECT_EQ(coap.dedup_per_device, 16u);
  EXPECT_EQ(coap.dedup_devices, 5u);
  EXPECT_EQ(coap.dedup_capacity, 16u);  // obsolete: read so old files load, then ignored
  EXPECT_EQ(coap.inflight_capacity, 16777216u);
  EXPECT_EQ(coap.busy_max_age_s, 30u);

  EXPECT_EQ(config.bootstrap.coaps_url, "coaps://ingest.example.net:5684");
  EXPECT_EQ(config.bootstrap.regenerate_after_s, 0u);
  EXPECT_EQ(config.energy_saver.coap_template, "/etc/coapgate/template.json");

  ASSERT_EQ(config.sinks.size(), 3u);
  EXPECT_EQ(config.sinks[0].type, "file");
  EXPECT_EQ(std::get<FileSinkConfig>(config.sinks[0].settings).path, "/var/log/coapgate.jsonl");

  EXPECT_EQ(config.sinks[1].type, "mqtt");
  const auto& mqtt = std::get<MqttSinkConfig>(config.sinks[1].settings);
  EXPECT_EQ(mqtt.host, "broker.example.net");
  EXPECT_EQ(mqtt.port, 8883);
  EXPECT_EQ(mqtt.qos, 0);
  EXPECT_EQ(mqtt.client_id, "coapgate-1");
  EXPECT_EQ(mqtt.username, "ingest");
  EXPECT_EQ(mqtt.password, "secret");
  EXPECT_TRUE(mqtt.tls);
  EXPECT_EQ(mqtt.topic_template, "fleet/{iccid}/{t}");
  EXPECT_EQ(mqtt.format, MqttFormat::kRaw);
  EXPECT_EQ(mqtt.connections, 64);

  EXPECT_EQ(config.sinks[2].type, "kafka");
  const auto& kafka = std::get<KafkaSinkConfig>(config.sinks[2].settings);
  EXPECT_EQ(kafka.brokers, "k1:9092,k2:9092");
  EXPECT_EQ(kafka.topic, "telemetry");
  const std::vector<std::pair<std::string, std::string>> properties = {{"acks", "all"},
                                                                       {"linger.ms", "5"}};
  EXPECT_EQ(kafka.properties, properties);
}

TEST(Config, AbsentKeysKeepTheirDefaults) {
  const Config config = Parse("[coap]\nmax_payload = 512\n[[sinks]]\ntype = \"mqtt\"\n");
  Config expected;
  expected.coap.max_payload = 512;
  expected.sinks = {SinkConfig{"mqtt", MqttSinkConfig{}}};
  EXPECT_EQ(config, expected);
  const auto& mqtt = std::get<MqttSinkConfig>(config.sinks[0].settings);
  EXPECT_EQ(mqtt.host, "127.0.0.1");
  EXPECT_EQ(mqtt.port, 1883);
  EXPECT_EQ(mqtt.qos, 1);
  EXPECT_EQ(mqtt.topic_template, "{iccid}/{t}");
  EXPECT_EQ(mqtt.format, MqttFormat::kEnvelope);
  EXPECT_EQ(mqtt.protocol, 5);
  EXPECT_EQ(mqtt.error_topic, "error");
  EXPECT_EQ(mqtt.max_inflight, 1000);
  EXPECT_EQ(mqtt.connections, 1);
  EXPECT_EQ(std::get<FileSinkConfig>(Parse("[[sinks]]\ntype = \"file\"\n").sinks[0].settings).path,
            "-");
}

TEST(Config, AcceptsBracketedIpv6Listen) {
  const Config config = Parse("[server]\ncoap_listen = [\"[::1]:5683\"]\n");
  ASSERT_EQ(config.server.coap_listen.size(), 1u);
  EXPECT_EQ(config.server.coap_listen[0], (ListenAddress{"::1", 5683, "[::1]:5683"}));
}

TEST(Config, AcceptsPortZeroEvenTwice) {
  // Each bind of port 0 gets its own ephemeral port, so repeating it is no conflict.
  const Config config =
      Parse("[server]\ncoap_listen = [\"127.0.0.1:0\", \"127.0.0.1:0\", \"[::1]:0\"]\n");
  ASSERT_EQ(config.server.coap_listen.size(), 3u);
  EXPECT_EQ(config.server.coap_listen[0], (ListenAddress{"127.0.0.1", 0, "127.0.0.1:0"}));
  EXPECT_EQ(config.server.coap_listen[2].port, 0);
}

TEST(Config, EmptyCoapsListIsNoDtls) {
  EXPECT_TRUE(Parse("[server]\ncoaps_listen = []\n").server.coaps_listen.empty());
  // Plain CoAP may be off when DTLS listens.
  const Config dtls_only = Parse("[server]\ncoap_listen = []\ncoaps_listen = [\"0.0.0.0:5684\"]\n");
  EXPECT_TRUE(dtls_only.server.coap_listen.empty());
}

TEST(ConfigError, UnknownKeysAnywhere) {
  ExpectError("[server]\nshardz = 4\n", "server.shardz", "unknown key (expected one of: ");
  ExpectError("[serverr]\n", "serverr", "unknown key");
  ExpectError("listen = 1\n", "listen", "unknown key");
  ExpectError("[server.extra]\nx = 1\n", "server.extra", "unknown key");
  ExpectError("[coap]\nmax_payloadd = 1\n", "coap.max_payloadd", "unknown key");
  ExpectError("[devices]\npath = \"x\"\n", "devices.path", "unknown key");
  ExpectError("[bootstrap]\nurl = \"x\"\n", "bootstrap.url", "unknown key");
  ExpectError("[energy_saver]\ntemplate = \"x\"\n", "energy_saver.template", "unknown key");
  ExpectError("[[sinks]]\ntype = \"file\"\nhost = \"x\"\n", "sinks[0].host",
              "unknown key for a file sink (expected one of: type, path)");
  ExpectError("[[sinks]]\ntype = \"file\"\n[[sinks]]\ntype = \"mqtt\"\nbrokers = \"x\"\n",
              "sinks[1].brokers", "unknown key for an mqtt sink");
  ExpectError("[[sinks]]\ntype = \"kafka\"\nbrokers = \"b\"\ntopic = \"t\"\nqos = 1\n",
              "sinks[0].qos", "unknown key for a kafka sink");
}

TEST(ConfigError, UnknownKeyIsTheFirstInTheFile) {
  ExpectError("[server]\nzzz = 1\naaa = 2\n", "server.zzz", "unknown key");
}

TEST(ConfigError, KeysAreQuotedAndEscapedOnOneLine) {
  ExpectError("[server]\n\"a.b\" = 1\n", "server.\"a.b\"", "unknown key");
  ExpectError("[server]\n\"x\\ny\" = 1\n", "server.\"x\\ny\"", "unknown key");
  ExpectError("[server]\nio = \"a\\nb\"\n", "server.io", "(got string \"a\\nb\")");
}

TEST(ConfigError, WrongTypesNameTheExpectedType) {
  ExpectError("[server]\nshards = \"4\"\n", "server.shards",
              "must be an integer in 0..1024 (got string \"4\")");
  ExpectError("[server]\nshards = 4.0\n", "server.shards",
              "must be an integer in 0..1024 (got float 4)");
  ExpectError("[server]\nio = 1\n", "server.io",
              "must be one of \"auto\", \"io_uring\" or \"recvmmsg\"");
  ExpectError("[server]\ncoap_listen = \"0.0.0.0:5683\"\n", "server.coap_listen",
              "must be an array of strings");
  ExpectError("[server]\ncoap_listen = [5683]\n", "server.coap_listen[0]",
              "must be a string (got integer 5683)");
  ExpectError("server = 5\n", "server", "must be a table (got integer 5)");
  ExpectError("[devices]\nfile = 1\n", "devices.file",
              "must be a non-empty string (got integer 1)");
  ExpectError("[coap]\nack = true\n", "coap.ack", "(got boolean true)");
  ExpectError("[energy_saver]\ncoap_template = []\n", "energy_saver.coap_template",
              "must be a string (got an array)");
  ExpectError("[bootstrap]\nregenerate_after_s = 1979-05-27\n", "bootstrap.regenerate_after_s",
              "(got a date)");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\ntls = \"yes\"\n", "sinks[0].tls",
              "must be true or false (got string \"yes\")");
}

struct RangeCase {
  std::string_view table;
  std::string_view key;
  int64_t lo;
  int64_t hi;
};

TEST(ConfigError, IntegerRangesAreCheckedAtBothEnds) {
  const RangeCase cases[] = {
      {"server", "shards", 0, 1024},
      {"server", "receive_buffer_bytes", 65536, int64_t{1} << 30},
      {"server", "drain_timeout_ms", 0, 600000},
      {"coap", "exchange_lifetime_s", 1, 86400},
      {"coap", "non_lifetime_s", 1, 86400},
      {"coap", "max_payload", 1, 65000},
      {"coap", "response_budget_ms", 10, 60000},
      {"coap", "dedup_capacity", 16, int64_t{1} << 28},
      {"coap", "dedup_per_device", 1, 16},
      {"coap", "dedup_devices", 0, (int64_t{1} << 24) - 1},
      {"coap", "inflight_capacity", 16, int64_t{1} << 24},
      {"coap", "busy_max_age_s", 1, 3600},
      {"bootstrap", "regenerate_after_s", 0, int64_t{1} << 30},
      {"devices", "reload_max_removed_percent", 0, 100},
  };
  for (const RangeCase& c : cases) {
    SCOPED_TRACE(std::string(c.table) + "." + std::string(c.key));
    auto text = [&](int64_t value) {
      return "[" + std::string(c.table) + "]\n" + std::string(c.key) + " = " +
             std::to_string(value) + "\n";
    };
    EXPECT_TRUE(ParseConfig(text(c.lo), kSource));
    EXPECT_TRUE(ParseConfig(text(c.hi), kSource));
    const std::string key = std::string(c.table) + "." + std::string(c.key);
    const std::string range =
        "must be an integer in " + std::to_string(c.lo) + ".." + std::to_string(c.hi);
    ExpectError(text(c.lo - 1), key, range + " (got " + std::to_string(c.lo - 1) + ")");
    ExpectError(text(c.hi + 1), key, range + " (got " + std::to_string(c.hi + 1) + ")");
  }
  EXPECT_EQ(ErrorOf("[coap]\nmax_payload = 0\n"),
            "test.toml: coap.max_payload: must be an integer in 1..65000 (got 0)");
}

TEST(ConfigError, SixtyFourBitValuesAreCheckedBeforeNarrowing) {
  // 2^32 + 1024 would narrow to a valid 1024 in a 32-bit field.
  ExpectError("[coap]\nmax_payload = 4294968320\n", "coap.max_payload", "(got 4294968320)");
  ExpectError("[server]\nshards = 9223372036854775807\n", "server.shards",
              "(got 9223372036854775807)");
  ExpectError("[server]\nshards = -9223372036854775808\n", "server.shards",
              "(got -9223372036854775808)");
}

TEST(ConfigError, ChoicesAreChecked) {
  ExpectError("[server]\nio = \"epoll\"\n", "server.io", "(got string \"epoll\")");
  ExpectError("[coap]\nack = \"never\"\n", "coap.ack",
              "must be one of \"sink\" or \"enqueue\" (got string \"never\")");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\nformat = \"json\"\n", "sinks[0].format",
              "must be one of \"envelope\" or \"raw\"");
  EXPECT_EQ(Parse("[server]\nio = \"io_uring\"\n").server.io, IoBackend::kIoUring);
}

TEST(ConfigError, ListenAddressesMustParse) {
  auto listen = [](std::string_view entry) {
    return "[server]\ncoap_listen = [\"0.0.0.0:5683\", \"" + std::string(entry) + "\"]\n";
  };
  constexpr std::pair<std::string_view, std::string_view> kBad[] = {
      {"localhost:5683", "the host is not an IPv4 literal"},
      {"1.2.3:5683", "invalid listen address \"1.2.3:5683\""},
      {"::1:5683", "an IPv6 address needs brackets"},
      {"[::1]", "expected \":port\" after ']'"},
      {"[::1:5683", "missing ']'"},
      {"[1.2.3.4]:5683", "the host is not an IPv6 literal"},
      {"[fe80::1%eth0]:5683", "the host is not an IPv6 literal"},
      {"0.0.0.0", "expected \"address:port\""},
      {"0.0.0.0:", "the port must be a number in 0..65535"},
      {"0.0.0.0:65536", "the port must be a number in 0..65535"},
      {"0.0.0.0:+1", "the port must be a number in 0..65535"},
      {":5683", "the host is not an IPv4 literal"},
      {"", "invalid listen address \"\""},
  };
  for (const auto& [entry, reason] : kBad) {
    SCOPED_TRACE(entry);
    ExpectError(listen(entry), "server.coap_listen[1]", reason);
  }
  ExpectError("[server]\ncoaps_listen = [\"x\"]\n", "server.coaps_listen[0]", "invalid listen");
  EXPECT_EQ(Parse(listen("10.0.0.1:65535")).server.coap_listen[1].port, 65535);
}

TEST(ConfigError, ListenAddressesMustBeDistinct) {
  ExpectError("[server]\ncoap_listen = [\"0.0.0.0:5683\", \"0.0.0.0:5683\"]\n",
              "server.coap_listen[1]", "same address as server.coap_listen[0]");
  ExpectError("[server]\ncoap_listen = [\"[::]:5683\", \"[0::0]:5683\"]\n", "server.coap_listen[1]",
              "same address as server.coap_listen[0]");
  ExpectError("[server]\ncoap_listen = [\"0.0.0.0:5683\"]\ncoaps_listen = [\"0.0.0.0:5683\"]\n",
              "server.coaps_listen[0]", "same address as server.coap_listen[0]");
  ExpectError("[server]\ncoap_listen = []\ncoaps_listen = []\n", "server.coap_listen",
              "at least one listen address is required");
}

TEST(ConfigError, StringsAreChecked) {
  ExpectError("[devices]\nfile = \"\"\n", "devices.file",
              "must be a non-empty string (got string \"\")");
  ExpectError("[devices]\nstate = \"\"\n", "devices.state", "must be a non-empty string");
  ExpectError("[devices]\nfile = \"a\\u0000b\"\n", "devices.file", "must not contain NUL");
  ExpectError("[bootstrap]\ncoaps_url = \"coap://h:5684\"\n", "bootstrap.coaps_url",
              "must start with \"coaps://\"");
  ExpectError("[bootstrap]\ncoaps_url = \"coaps://\"\n", "bootstrap.coaps_url", "must name a host");
  ExpectError("[bootstrap]\ncoaps_url = \"coaps://a,b\"\n", "bootstrap.coaps_url",
              "must not contain ','");
  ExpectError("[bootstrap]\ncoaps_url = \"coaps://a b\"\n", "bootstrap.coaps_url",
              "must not contain spaces");
  ExpectError("[bootstrap]\ncoaps_url = \"coaps://" + std::string(100, 'h') + "\"\n",
              "bootstrap.coaps_url", "the bootstrap reply must stay under 150 bytes");
}

TEST(ConfigError, SinksAreChecked) {
  ExpectError("sinks = []\n", "sinks", "at least one sink is required");
  ExpectError("[sinks]\ntype = \"file\"\n", "sinks",
              "must be an array of tables, written [[sinks]]");
  ExpectError("sinks = [1]\n", "sinks[0]", "must be a table (got integer 1)");
  ExpectError("[[sinks]]\npath = \"x\"\n", "sinks[0].type",
              "required: one of \"file\", \"mqtt\" or \"kafka\"");
  ExpectError("[[sinks]]\ntype = \"amqp\"\n", "sinks[0].type", "(got string \"amqp\")");
  ExpectError("[[sinks]]\ntype = \"file\"\npath = \"\"\n", "sinks[0].path", "non-empty");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\nqos = 2\n", "sinks[0].qos",
              "must be an integer in 0..1 (got 2)");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\nconnections = 65\n", "sinks[0].connections",
              "must be an integer in 1..64 (got 65)");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\nport = 0\n", "sinks[0].port", "1..65535");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\nhost = \"\"\n", "sinks[0].host", "non-empty");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\ntopic_template = \"\"\n", "sinks[0].topic_template",
              "non-empty");
}

TEST(ConfigError, KafkaSinksAreChecked) {
  ExpectError("[[sinks]]\ntype = \"kafka\"\ntopic = \"t\"\n", "sinks[0].brokers",
              "required for a kafka sink");
  ExpectError("[[sinks]]\ntype = \"kafka\"\nbrokers = \"b\"\n", "sinks[0].topic",
              "required for a kafka sink");
  ExpectError("[[sinks]]\ntype = \"kafka\"\nbrokers = \"\"\ntopic = \"t\"\n", "sinks[0].brokers",
              "non-empty");
  ExpectError("[[sinks]]\ntype = \"kafka\"\nbrokers = \"b\"\ntopic = \"\"\n", "sinks[0].topic",
              "non-empty");
  const std::string kafka = "[[sinks]]\ntype = \"kafka\"\nbrokers = \"b\"\ntopic = \"t\"\n";
  ExpectError(kafka + "properties = 1\n", "sinks[0].properties", "must be a table");
  ExpectError(kafka + "[sinks.properties]\nacks = 1\n", "sinks[0].properties.acks",
              "must be a string (got integer 1)");
  // An unquoted dotted name is a nested table in TOML; the message shows the quoted form.
  ExpectError(kafka + "[sinks.properties]\nlinger.ms = \"5\"\n", "sinks[0].properties.linger",
              "\"linger.ms\" = \"5\"");
  ExpectError(kafka + "[sinks.properties]\n\"bootstrap.servers\" = \"x\"\n",
              "sinks[0].properties.\"bootstrap.servers\"", "conflicts with brokers");
}

TEST(ConfigError, FileSinksNeedDistinctPaths) {
  ExpectError("[[sinks]]\ntype = \"file\"\n[[sinks]]\ntype = \"file\"\npath = \"-\"\n",
              "sinks[1].path", "same file as sinks[0] (\"-\")");
  EXPECT_EQ(Parse("[[sinks]]\ntype = \"file\"\n[[sinks]]\ntype = \"file\"\npath = \"out\"\n")
                .sinks.size(),
            2u);
}

TEST(ConfigError, SyntaxErrorsGiveLineAndColumn) {
  const std::string error = ErrorOf("[server]\nshards = \n");
  EXPECT_TRUE(error.starts_with("test.toml:2:")) << error;
  const std::string unclosed = ErrorOf("[coap\n");
  EXPECT_TRUE(unclosed.starts_with("test.toml:1:")) << unclosed;
  // An integer TOML itself cannot hold is a syntax error, not a range error.
  const std::string huge = ErrorOf("[server]\nshards = 99999999999999999999\n");
  EXPECT_TRUE(huge.starts_with("test.toml:2:")) << huge;
  const std::string duplicate = ErrorOf("[server]\nshards = 1\nshards = 2\n");
  EXPECT_TRUE(duplicate.starts_with("test.toml:3:")) << duplicate;
}

TEST(ConfigError, SourceNameIsKeptOnOneLine) {
  auto config = ParseConfig("[server]\nshardz = 1\n", "odd\nname.toml");
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().message.find('\n'), std::string::npos) << config.error().message;
  EXPECT_TRUE(config.error().message.starts_with("odd\\nname.toml: server.shardz: ")) << config.error().message;
}

TEST(Config, DtlsLimits) {
  const Config config = Parse("[dtls]\nmax_sessions = 500\nmax_handshakes = 50\n"
                              "handshake_timeout_ms = 2000\nidle_timeout_s = 60\n"
                              "identity_hint = \"coapgate\"\n");
  EXPECT_EQ(config.dtls.max_sessions, 500u);
  EXPECT_EQ(config.dtls.max_handshakes, 50u);
  EXPECT_EQ(config.dtls.handshake_timeout_ms, 2000u);
  EXPECT_EQ(config.dtls.idle_timeout_s, 60u);
  EXPECT_EQ(config.dtls.identity_hint, "coapgate");
  EXPECT_EQ(Config{}.dtls.identity_hint, "");
  ExpectError("[dtls]\nmax_sessions = 10\nmax_handshakes = 11\n", "dtls.max_handshakes",
              "must not exceed dtls.max_sessions (10)");
  ExpectError("[dtls]\nmax_sessions = 0\n", "dtls.max_sessions", "1..10000000");
  ExpectError("[dtls]\nsessions = 1\n", "dtls.sessions", "unknown key");
}

TEST(Config, PostgresRegistryBackend) {
  EXPECT_EQ(Config{}.devices.backend, DeviceBackend::kCsv);
  const Config config = Parse(
      "[devices]\nbackend = \"postgres\"\n"
      "[devices.postgres]\ndsn = \"host=/run/postgresql dbname=coapgate\"\n"
      "snapshot = \"/var/lib/coapgate/registry.csv\"\n");
  EXPECT_EQ(config.devices.backend, DeviceBackend::kPostgres);
  EXPECT_EQ(config.devices.postgres.dsn, "host=/run/postgresql dbname=coapgate");
  EXPECT_EQ(config.devices.postgres.snapshot, "/var/lib/coapgate/registry.csv");
  EXPECT_EQ(Config{}.devices.postgres.snapshot, "registry-snapshot.csv");
  ExpectError("[devices]\nbackend = \"postgres\"\n", "devices.postgres.dsn",
              "required when devices.backend = \"postgres\"");
  ExpectError("[devices]\nbackend = \"mysql\"\n", "devices.backend",
              "must be one of \"csv\" or \"postgres\"");
  ExpectError("[devices.postgres]\npassword = \"x\"\n", "devices.postgres.password",
              "unknown key (expected one of: dsn, snapshot)");
}

TEST(ConfigError, MqttSinksAreChecked) {
  ExpectError("[[sinks]]\ntype = \"mqtt\"\ntopic_template = \"a/+/{t}\"\n",
              "sinks[0].topic_template", "wildcard");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\ntopic_template = \"{device}/{t}\"\n",
              "sinks[0].topic_template", "{device}");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\nerror_topic = \"errors/#\"\n", "sinks[0].error_topic",
              "wildcard");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\nprotocol = \"3.1.1\"\nformat = \"raw\"\n",
              "sinks[0].format", "needs protocol = \"5\"");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\nprotocol = \"4\"\n", "sinks[0].protocol",
              "must be one of \"5\" or \"3.1.1\"");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\ntls = true\ncert_file = \"c.pem\"\n",
              "sinks[0].key_file", "go together");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\nca_file = \"ca.pem\"\n", "sinks[0].ca_file",
              "needs tls = true");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\npassword = \"p\"\n", "sinks[0].password",
              "needs a username");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\nmax_inflight = 0\n", "sinks[0].max_inflight",
              "1..65535");
  EXPECT_EQ(std::get<MqttSinkConfig>(
                Parse("[[sinks]]\ntype = \"mqtt\"\nprotocol = \"3.1.1\"\n").sinks[0].settings)
                .protocol,
            4);
}

// Secrets kept out of the TOML (issue #14): a file given by path, or ${NAME} from the
// environment, in the MQTT password and the Kafka SASL password.
std::string WriteSecret(std::string_view name, std::string_view text) {
  const std::string path = testing::TempDir() + "/" + std::string(name);
  std::FILE* file = std::fopen(path.c_str(), "wb");
  EXPECT_NE(file, nullptr);
  if (file == nullptr) return path;
  EXPECT_EQ(std::fwrite(text.data(), 1, text.size(), file), text.size());
  EXPECT_EQ(std::fclose(file), 0);
  return path;
}

constexpr std::string_view kMqttUser = "[[sinks]]\ntype = \"mqtt\"\nusername = \"u\"\n";

TEST(ConfigSecrets, MqttPasswordFileLosesOneTrailingNewline) {
  const std::string path = WriteSecret("coapgate-mqtt-password", "s3cret\n\n");
  const Config config =
      Parse(std::string(kMqttUser) + "password_file = \"" + path + "\"\n");
  EXPECT_EQ(std::get<MqttSinkConfig>(config.sinks[0].settings).password, "s3cret\n");
}

TEST(ConfigSecrets, MqttPasswordFileExpandsTheEnvironment) {
  WriteSecret("coapgate-mqtt", "fromfile");
  ASSERT_EQ(::setenv("COAPGATE_TEST_CREDENTIALS", testing::TempDir().c_str(), 1), 0);
  const Config config = Parse(std::string(kMqttUser) +
                              "password_file = \"${COAPGATE_TEST_CREDENTIALS}/coapgate-mqtt\"\n");
  EXPECT_EQ(std::get<MqttSinkConfig>(config.sinks[0].settings).password, "fromfile");
}

TEST(ConfigSecrets, MqttPasswordExpandsTheEnvironment) {
  ASSERT_EQ(::setenv("COAPGATE_TEST_PASSWORD", "envpw", 1), 0);
  const Config config =
      Parse(std::string(kMqttUser) + "password = \"a$b-${COAPGATE_TEST_PASSWORD}-c\"\n");
  EXPECT_EQ(std::get<MqttSinkConfig>(config.sinks[0].settings).password, "a$b-envpw-c");
}

TEST(ConfigSecrets, DoubleDollarIsALiteralAndErrorsNeverQuoteTheSecret) {
  const Config config = Parse(std::string(kMqttUser) + "password = \"p$${x}q\"\n");
  EXPECT_EQ(std::get<MqttSinkConfig>(config.sinks[0].settings).password, "p${x}q");
  const std::string error =
      ErrorOf(std::string(kMqttUser) + "password = \"s3cr-${t!part}\"\n");
  EXPECT_NE(error.find("sinks[0].password: invalid environment variable name"), std::string::npos)
      << error;
  EXPECT_EQ(error.find("t!part"), std::string::npos) << "a piece of the password leaked: " << error;
}

TEST(ConfigSecrets, ErrorsNameTheKeyAndTheCause) {
  ::unsetenv("COAPGATE_TEST_UNSET");
  ExpectError(std::string(kMqttUser) + "password = \"${COAPGATE_TEST_UNSET}\"\n",
              "sinks[0].password", "environment variable COAPGATE_TEST_UNSET is not set");
  ExpectError(std::string(kMqttUser) + "password = \"${oops\"\n", "sinks[0].password",
              "unterminated");
  ExpectError(std::string(kMqttUser) + "password = \"p\"\npassword_file = \"/x\"\n",
              "sinks[0].password_file", "conflicts with sinks[0].password");
  const std::string missing = testing::TempDir() + "/coapgate-no-such-secret";
  ExpectError(std::string(kMqttUser) + "password_file = \"" + missing + "\"\n",
              "sinks[0].password_file", missing + ": cannot read: No such file or directory");
  ExpectError(std::string(kMqttUser) + "password_file = \"${COAPGATE_TEST_UNSET}/pw\"\n",
              "sinks[0].password_file", "COAPGATE_TEST_UNSET is not set");
  ExpectError("[[sinks]]\ntype = \"mqtt\"\npassword_file = \"" +
                  WriteSecret("coapgate-pw", "p") + "\"\n",
              "sinks[0].password_file", "needs a username");
}

constexpr std::string_view kKafka =
    "[[sinks]]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"t\"\n";

TEST(ConfigSecrets, KafkaSaslPasswordFileBecomesTheProperty) {
  const std::string path = WriteSecret("coapgate-kafka-password", "kpw\n");
  const Config config = Parse(std::string(kKafka) + "sasl_password_file = \"" + path +
                              "\"\n[sinks.properties]\n\"sasl.mechanism\" = \"PLAIN\"\n"
                              "\"sasl.username\" = \"u\"\n");
  const auto& properties = std::get<KafkaSinkConfig>(config.sinks[0].settings).properties;
  const std::vector<std::pair<std::string, std::string>> want = {
      {"sasl.mechanism", "PLAIN"}, {"sasl.password", "kpw"}, {"sasl.username", "u"}};
  EXPECT_EQ(properties, want);
}

TEST(ConfigSecrets, KafkaSaslPasswordPropertyExpandsTheEnvironment) {
  ASSERT_EQ(::setenv("COAPGATE_TEST_PASSWORD", "envpw", 1), 0);
  const Config config = Parse(std::string(kKafka) +
                              "[sinks.properties]\n\"sasl.password\" = \"${COAPGATE_TEST_PASSWORD}\"\n");
  const auto& properties = std::get<KafkaSinkConfig>(config.sinks[0].settings).properties;
  ASSERT_EQ(properties.size(), 1u);
  EXPECT_EQ(properties[0].second, "envpw");
}

TEST(ConfigSecrets, KafkaErrorsNameTheKey) {
  ::unsetenv("COAPGATE_TEST_UNSET");
  ExpectError(std::string(kKafka) + "[sinks.properties]\n\"sasl.password\" = \"${COAPGATE_TEST_UNSET}\"\n",
              "sinks[0].properties.\"sasl.password\"", "COAPGATE_TEST_UNSET is not set");
  ExpectError(std::string(kKafka) + "sasl_password_file = \"/x\"\n[sinks.properties]\n"
                                    "\"sasl.password\" = \"p\"\n",
              "sinks[0].sasl_password_file", "conflicts with sinks[0].properties.\"sasl.password\"");
  const std::string missing = testing::TempDir() + "/coapgate-no-such-secret";
  ExpectError(std::string(kKafka) + "sasl_password_file = \"" + missing + "\"\n",
              "sinks[0].sasl_password_file", missing + ": cannot read: No such file or directory");
}

TEST(LoadConfigFile, MissingFileCannotBeRead) {
  const std::string path = testing::TempDir() + "/coapgate-no-such-config.toml";
  auto config = LoadConfigFile(path);
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().message, path + ": cannot read: No such file or directory");
  EXPECT_EQ(config.error().kind, coapgate::ErrorKind::kEnvironment);
}

TEST(LoadConfigFile, DirectoryCannotBeRead) {
  auto config = LoadConfigFile(testing::TempDir());
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message.find(": cannot read: Is a directory"), std::string::npos)
      << config.error().message;
}

TEST(LoadConfigFile, ReadsAFileAndNamesItInErrors) {
  const std::string path = testing::TempDir() + "/coapgate-config-test.toml";
  auto write = [&](std::string_view text) {
    std::FILE* file = std::fopen(path.c_str(), "wb");
    ASSERT_NE(file, nullptr);
    ASSERT_EQ(std::fwrite(text.data(), 1, text.size(), file), text.size());
    ASSERT_EQ(std::fclose(file), 0);
  };
  write("[coap]\nmax_payload = 100\n");
  auto config = LoadConfigFile(path);
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->coap.max_payload, 100u);
  EXPECT_EQ(config->source_path, path);  // what SIGHUP re-reads the reload limit from

  write("[coap]\nmax_payload = 0\n");
  auto bad = LoadConfigFile(path);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message, path + ": coap.max_payload: must be an integer in 1..65000 (got 0)");
  EXPECT_EQ(bad.error().kind, coapgate::ErrorKind::kBadInput);

  write(std::string((1 << 20) + 1, '#'));
  auto large = LoadConfigFile(path);
  ASSERT_FALSE(large);
  EXPECT_EQ(large.error().message, path + ": cannot read: larger than 1048576 bytes");
  EXPECT_EQ(large.error().kind, coapgate::ErrorKind::kBadInput);
  std::remove(path.c_str());
}

TEST(Config, ToStringUsesTheFileSpelling) {
  EXPECT_EQ(ToString(IoBackend::kAuto), "auto");
  EXPECT_EQ(ToString(IoBackend::kIoUring), "io_uring");
  EXPECT_EQ(ToString(IoBackend::kRecvmmsg), "recvmmsg");
  EXPECT_EQ(ToString(AckMode::kSink), "sink");
  EXPECT_EQ(ToString(AckMode::kEnqueue), "enqueue");
}

TEST(Config, EnergySaverKeys) {
  auto config = ParseConfig(
      "[energy_saver]\ncoap_template = \"t.json\"\ndevice_templates = \"d.csv\"\n"
      "on_error = \"reject\"\n",
      "test.toml");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->energy_saver.coap_template, "t.json");
  EXPECT_EQ(config->energy_saver.device_templates, "d.csv");
  EXPECT_EQ(config->energy_saver.on_error, TranslationErrorPolicy::kReject);
  EXPECT_EQ(Config{}.energy_saver.on_error, TranslationErrorPolicy::kAccept);
  auto bad = ParseConfig("[energy_saver]\non_error = \"drop\"\n", "test.toml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("energy_saver.on_error"), std::string::npos) << bad.error().message;
  auto conflict = ParseConfig("[coap]\nack = \"enqueue\"\n[energy_saver]\non_error = \"reject\"\n",
                              "test.toml");
  ASSERT_FALSE(conflict);
  EXPECT_NE(conflict.error().message.find("energy_saver.on_error"), std::string::npos) << conflict.error().message;
}

// [log]: the level and the format, both checked against their spellings; --log-level shares
// the level's parser.
TEST(ConfigLog, DefaultsToInfoText) {
  const Config config = Parse("");
  EXPECT_EQ(config.log.level, LogLevel::kInfo);
  EXPECT_EQ(config.log.format, LogFormat::kText);
  EXPECT_EQ(Parse("[log]\n"), Config{});
}

TEST(ConfigLog, ReadsLevelAndFormat) {
  const Config config = Parse("[log]\nlevel = \"debug\"\nformat = \"json\"\n");
  EXPECT_EQ(config.log.level, LogLevel::kDebug);
  EXPECT_EQ(config.log.format, LogFormat::kJson);
  EXPECT_EQ(Parse("[log]\nlevel = \"warn\"\n").log.level, LogLevel::kWarn);
  EXPECT_EQ(Parse("[log]\nlevel = \"error\"\n").log.level, LogLevel::kError);
  EXPECT_EQ(ToString(LogLevel::kWarn), "warn");
  EXPECT_EQ(ToString(LogFormat::kJson), "json");
}

TEST(ConfigLog, BadValuesNameTheKey) {
  ExpectError("[log]\nlevel = \"verbose\"\n", "log.level",
              "must be one of \"debug\", \"info\", \"warn\" or \"error\" (got string "
              "\"verbose\")");
  ExpectError("[log]\nformat = \"xml\"\n", "log.format",
              "must be one of \"text\" or \"json\" (got string \"xml\")");
  ExpectError("[log]\nlevel = 3\n", "log.level", "must be one of");
  ExpectError("[log]\nfile = \"/var/log/x\"\n", "log.file", "unknown key");
  ExpectError("log = \"debug\"\n", "log", "must be a table");
}

TEST(ConfigLog, ParsesTheCommandLineLevel) {
  EXPECT_EQ(ParseLogLevel("debug").value(), LogLevel::kDebug);
  EXPECT_EQ(ParseLogLevel("error").value(), LogLevel::kError);
  auto bad = ParseLogLevel("DEBUG");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().find("(got \"DEBUG\")"), std::string::npos) << bad.error();
}

TEST(ConfigRestart, OffByDefaultAndReadsTheKeyFile) {
  const Config defaults = Parse("");
  EXPECT_EQ(defaults.restart.state_file, "");
  EXPECT_EQ(defaults.restart.max_age_s, 600u);
  const std::string key = std::string(64, 'a');
  const std::string path = WriteSecret("coapgate-restart-key", key + "\n");
  const Config config = Parse("[restart]\nstate_file = \"/var/lib/coapgate/s.state\"\nkey_file = \"" +
                              path + "\"\nmax_age_s = 60\n");
  EXPECT_EQ(config.restart.state_file, "/var/lib/coapgate/s.state");
  EXPECT_EQ(config.restart.key.substr(0, 64), key);
  EXPECT_EQ(config.restart.max_age_s, 60u);
}

TEST(ConfigRestart, RefusesAMissingOrMalformedKey) {
  ExpectError("[restart]\nstate_file = \"s\"\n", "restart.key_file", "is required");
  ExpectError("[restart]\nstate_file = \"s\"\nkey_file = \"/nonexistent/key\"\n",
              "restart.key_file", "cannot read");
  const std::string short_key = WriteSecret("coapgate-restart-short", std::string(63, 'a'));
  ExpectError("[restart]\nstate_file = \"s\"\nkey_file = \"" + short_key + "\"\n",
              "restart.key_file", "64 hex digits");
  const std::string not_hex = WriteSecret("coapgate-restart-nothex", std::string(64, 'z'));
  ExpectError("[restart]\nstate_file = \"s\"\nkey_file = \"" + not_hex + "\"\n",
              "restart.key_file", "64 hex digits");
  ExpectError("[restart]\nmax_age_s = 0\n", "restart.max_age_s", "");
  ExpectError("[restart]\nstatefile = \"s\"\n", "restart.statefile", "unknown key");
}

}  // namespace
}  // namespace coapgate::config
