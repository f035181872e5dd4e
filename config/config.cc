#include "config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "common/hex.h"
#include "common/quote.h"
#include "config/toml_reader.h"
#include "sinks/mqtt_topic.h"

namespace coapgate::config {
namespace {

// A configuration is a few kilobytes. The bound keeps a mistaken path (/dev/zero, a log file)
// from being read into memory whole.
constexpr size_t kMaxConfigBytes = size_t{1} << 20;

// docs/bootstrap-and-dtls.md: the whole bootstrap datagram stays under 150 bytes, i.e. at most 149. The reply
// spends 4 (header) + 8 (longest token) + 1 (Content-Format) + 1 (payload marker) + 20 (longest
// ICCID) + 19 (longest PSK) + 2 (commas) = 55 of them before the URL.
// Review: keep in step with the bootstrap reply encoder when it lands.
constexpr size_t kMaxCoapsUrlBytes = 149 - 55;

constexpr Named<IoBackend> kIoBackends[] = {{"auto", IoBackend::kAuto},
                                            {"io_uring", IoBackend::kIoUring},
                                            {"recvmmsg", IoBackend::kRecvmmsg}};
constexpr Named<DeviceBackend> kDeviceBackends[] = {{"csv", DeviceBackend::kCsv},
                                                    {"postgres", DeviceBackend::kPostgres}};
constexpr Named<AckMode> kAckModes[] = {{"sink", AckMode::kSink}, {"enqueue", AckMode::kEnqueue}};
constexpr Named<TranslationErrorPolicy> kTranslationErrorPolicies[] = {
    {"accept", TranslationErrorPolicy::kAccept}, {"reject", TranslationErrorPolicy::kReject}};
enum class SinkKind : uint8_t { kFile, kMqtt, kKafka };
constexpr Named<SinkKind> kSinkKinds[] = {
    {"file", SinkKind::kFile}, {"mqtt", SinkKind::kMqtt}, {"kafka", SinkKind::kKafka}};
constexpr Named<MqttFormat> kMqttFormats[] = {{"envelope", MqttFormat::kEnvelope},
                                              {"raw", MqttFormat::kRaw}};
constexpr Named<int> kMqttProtocols[] = {{"5", 5}, {"3.1.1", 4}};
constexpr Named<LogLevel> kLogLevels[] = {{"debug", LogLevel::kDebug},
                                          {"info", LogLevel::kInfo},
                                          {"warn", LogLevel::kWarn},
                                          {"error", LogLevel::kError}};
constexpr Named<LogFormat> kLogFormats[] = {{"text", LogFormat::kText},
                                            {"json", LogFormat::kJson}};

// "a.b.c.d:port" or "[v6]:port", both literals checked by inet_pton. Names are refused: a
// listen address is bound at startup, and a resolver has no business there.
Result<ListenAddress, std::string> ParseListenAddress(std::string_view text) {
  const std::string bad = "invalid listen address " + QuoteForMessage(text) + ": ";
  std::string_view host;
  std::string_view port;
  int family = AF_INET;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return Fail(bad + "missing ']'");
    host = text.substr(1, close - 1);
    const std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') return Fail(bad + "expected \":port\" after ']'");
    port = rest.substr(1);
    family = AF_INET6;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return Fail(bad + "expected \"address:port\", e.g. \"0.0.0.0:5683\"");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return Fail(bad + "an IPv6 address needs brackets, e.g. \"[::]:5683\"");
    }
  }
  char literal[INET6_ADDRSTRLEN];
  unsigned char binary[sizeof(in6_addr)];
  const bool fits = !host.empty() && host.size() < sizeof(literal);
  if (fits) {
    std::memcpy(literal, host.data(), host.size());
    literal[host.size()] = '\0';
  }
  if (!fits || inet_pton(family, literal, binary) != 1) {
    return Fail(bad + (family == AF_INET ? "the host is not an IPv4 literal"
                                         : "the host is not an IPv6 literal"));
  }
  uint32_t number = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || number > 65535) {
    return Fail(bad + "the port must be a number in 0..65535");
  }
  return ListenAddress{std::string(host), static_cast<uint16_t>(number), std::string(text)};
}

bool ReadListenList(TableReader& r, std::string_view key, std::vector<ListenAddress>* out) {
  const toml::node* node = r.Find(key);
  if (node == nullptr) return true;
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    return r.Fail(key,
                "must be an array of strings, e.g. [\"0.0.0.0:5683\"] (got " + Got(*node) + ")");
  }
  std::vector<ListenAddress> list;
  for (size_t i = 0; i < array->size(); ++i) {
    const toml::node& element = *array->get(i);
    const std::string path = Element(r.KeyPath(key), i);
    const auto* text = element.as_string();
    if (text == nullptr) return r.FailAt(path, "must be a string (got " + Got(element) + ")");
    auto address = ParseListenAddress(text->get());
    if (!address) return r.FailAt(path, address.error());
    list.push_back(std::move(*address));
  }
  *out = std::move(list);
  return true;
}

// Address family and bytes of a parsed ListenAddress, so that "[::0]:1" and "[::]:1" compare
// equal. REQUIRES: `address` came from ParseListenAddress (or is a default).
std::string BindKey(const ListenAddress& address) {
  const bool v6 = address.host.find(':') != std::string::npos;
  unsigned char binary[sizeof(in6_addr)] = {};
  inet_pton(v6 ? AF_INET6 : AF_INET, address.host.c_str(), binary);
  std::string key(reinterpret_cast<const char*>(binary), v6 ? 16 : 4);
  key.push_back(static_cast<char>(address.port >> 8));
  key.push_back(static_cast<char>(address.port & 0xff));
  return key;
}

// Two sockets on one address would split its traffic between them under SO_REUSEPORT (and a
// CoAP and a CoAPS socket can share no port), so a repeated address is refused; port 0 is
// exempt since each bind gets its own ephemeral port.
bool CheckListenAddresses(const Config::Server& server, TableReader* reader) {
  if (server.coap_listen.empty() && server.coaps_listen.empty()) {
    return reader->Fail("coap_listen",
                        "at least one listen address is required (coaps_listen is empty too)");
  }
  struct Seen {
    std::string key;
    std::string path;
    std::string text;
  };
  std::vector<Seen> seen;
  for (const auto& [name, list] : {std::pair{"coap_listen", &server.coap_listen},
                                   std::pair{"coaps_listen", &server.coaps_listen}}) {
    for (size_t i = 0; i < list->size(); ++i) {
      const ListenAddress& address = (*list)[i];
      if (address.port == 0) continue;
      std::string key = BindKey(address);
      std::string path = Element(reader->KeyPath(name), i);
      for (const Seen& earlier : seen) {
        if (earlier.key == key) {
          return reader->FailAt(
              path, "same address as " + earlier.path + " (" + QuoteForMessage(earlier.text) + ")");
        }
      }
      seen.push_back({std::move(key), std::move(path), address.text});
    }
  }
  return true;
}

bool ReadServer(TableReader& r, Config::Server* server) {
  return r.OnlyKeys({"coap_listen", "coaps_listen", "shards", "io", "receive_buffer_bytes",
                     "drain_timeout_ms", "takeover_socket"}) &&
         ReadListenList(r, "coap_listen", &server->coap_listen) &&
         ReadListenList(r, "coaps_listen", &server->coaps_listen) &&
         r.Integer("shards", 0, 1024, &server->shards) &&
         r.Choice("io", kIoBackends, &server->io) &&
         r.Integer<uint32_t>("receive_buffer_bytes", 65536, uint32_t{1} << 30,
                             &server->receive_buffer_bytes) &&
         r.Integer<uint32_t>("drain_timeout_ms", 0, 600000, &server->drain_timeout_ms) &&
         r.String("takeover_socket", /*non_empty=*/false, &server->takeover_socket) &&
         CheckListenAddresses(*server, &r);
}

bool ReadAdmin(TableReader& r, Config::Admin* admin) {
  std::string text = admin->listen.text;
  if (!r.OnlyKeys({"listen"}) || !r.String("listen", /*non_empty=*/false, &text)) return false;
  if (text.empty()) {
    admin->enabled = false;
    return true;
  }
  auto address = ParseListenAddress(text);
  if (!address) return r.FailAt("admin.listen", address.error());
  admin->enabled = true;
  admin->listen = std::move(*address);
  return true;
}

bool ReadLog(TableReader& r, Config::Log* log) {
  return r.OnlyKeys({"level", "format"}) && r.Choice("level", kLogLevels, &log->level) &&
         r.Choice("format", kLogFormats, &log->format);
}

bool ReadPostgres(TableReader& r, Config::Devices::Postgres* postgres) {
  return r.OnlyKeys({"dsn", "snapshot"}) &&
         r.String("dsn", /*non_empty=*/true, &postgres->dsn) &&
         r.String("snapshot", /*non_empty=*/true, &postgres->snapshot);
}

bool ReadDevices(TableReader& r, Config::Devices* devices) {
  if (!(r.OnlyKeys({"backend", "file", "state", "reload_max_removed_percent", "postgres"}) &&
        r.Choice("backend", kDeviceBackends, &devices->backend) &&
        r.String("file", /*non_empty=*/true, &devices->file) &&
        r.String("state", /*non_empty=*/true, &devices->state) &&
        r.Integer<uint32_t>("reload_max_removed_percent", 0, 100,
                            &devices->reload_max_removed_percent) &&
        r.Section("postgres",
                  [&](TableReader& t) { return ReadPostgres(t, &devices->postgres); }))) {
    return false;
  }
  if (devices->backend == DeviceBackend::kPostgres && devices->postgres.dsn.empty()) {
    return r.FailAt("devices.postgres.dsn", "required when devices.backend = \"postgres\"");
  }
  return true;
}

bool ReadCoap(TableReader& r, Config::Coap* coap) {
  return r.OnlyKeys({"exchange_lifetime_s", "non_lifetime_s", "max_payload", "response_budget_ms",
                     "ack", "dedup_per_device", "dedup_devices", "dedup_capacity", "inflight_capacity",
                     "busy_max_age_s"}) &&
         r.Integer<uint32_t>("exchange_lifetime_s", 1, 86400, &coap->exchange_lifetime_s) &&
         r.Integer<uint32_t>("non_lifetime_s", 1, 86400, &coap->non_lifetime_s) &&
         r.Integer<uint32_t>("max_payload", 1, 65000, &coap->max_payload) &&
         r.Integer<uint32_t>("response_budget_ms", 10, 60000, &coap->response_budget_ms) &&
         r.Choice("ack", kAckModes, &coap->ack) &&
         r.Integer<uint32_t>("dedup_per_device", 1, 16, &coap->dedup_per_device) &&
         r.Integer<uint32_t>("dedup_devices", 0, (uint32_t{1} << 24) - 1, &coap->dedup_devices) &&
         // Replaced by the two keys above; still read so that existing files keep loading.
         r.Integer<uint32_t>("dedup_capacity", 16, uint32_t{1} << 28, &coap->dedup_capacity) &&
         r.Integer<uint32_t>("inflight_capacity", 16, uint32_t{1} << 24,
                             &coap->inflight_capacity) &&
         r.Integer<uint32_t>("busy_max_age_s", 1, 3600, &coap->busy_max_age_s);
}

bool ReadBootstrap(TableReader& r, Config::Bootstrap* bootstrap) {
  if (!r.OnlyKeys({"coaps_url", "regenerate_after_s"}) ||
      !r.String("coaps_url", /*non_empty=*/true, &bootstrap->coaps_url) ||
      !r.Integer<uint32_t>("regenerate_after_s", 0, uint32_t{1} << 30,
                           &bootstrap->regenerate_after_s)) {
    return false;
  }
  // Devices split the reply "ICCID,PSK,COAPS_URL" at commas and hand the URL to their DTLS
  // stack, so it must be one printable token.
  const std::string& url = bootstrap->coaps_url;
  constexpr std::string_view kScheme = "coaps://";
  if (!url.starts_with(kScheme)) {
    return r.Fail("coaps_url", "must start with \"coaps://\" (got " + QuoteForMessage(url) + ")");
  }
  if (url.size() == kScheme.size())
    return r.Fail("coaps_url", "must name a host after \"coaps://\"");
  if (url.find(',') != std::string::npos) {
    return r.Fail("coaps_url", "must not contain ',' (the bootstrap reply is comma-separated)");
  }
  if (std::any_of(url.begin(), url.end(), [](char c) {
        return static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) == 0x7f;
      })) {
    return r.Fail("coaps_url", "must not contain spaces or control characters");
  }
  if (url.size() > kMaxCoapsUrlBytes) {
    return r.Fail("coaps_url", "must be at most " + std::to_string(kMaxCoapsUrlBytes) +
                                   " bytes (the bootstrap reply must stay under 150 bytes)");
  }
  return true;
}

bool ReadDtls(TableReader& r, Config::Dtls* dtls) {
  if (!(r.OnlyKeys({"max_sessions", "max_handshakes", "max_handshakes_per_source",
                    "handshake_timeout_ms", "idle_timeout_s", "identity_hint"}) &&
        r.Integer<uint32_t>("max_sessions", 1, 10000000, &dtls->max_sessions) &&
        r.Integer<uint32_t>("max_handshakes", 1, 1000000, &dtls->max_handshakes) &&
        r.Integer<uint32_t>("max_handshakes_per_source", 1, 1000000,
                            &dtls->max_handshakes_per_source) &&
        r.Integer<uint32_t>("handshake_timeout_ms", 100, 600000, &dtls->handshake_timeout_ms) &&
        r.Integer<uint32_t>("idle_timeout_s", 1, 30 * 86400, &dtls->idle_timeout_s) &&
        r.String("identity_hint", /*non_empty=*/false, &dtls->identity_hint))) {
    return false;
  }
  if (dtls->max_handshakes > dtls->max_sessions) {
    return r.Fail("max_handshakes", "must not exceed dtls.max_sessions (" +
                                        std::to_string(dtls->max_sessions) + ")");
  }
  if (dtls->identity_hint.size() > 128) {
    return r.Fail("identity_hint", "must be at most 128 bytes");
  }
  return true;
}

bool ReadEnergySaver(TableReader& r, Config::EnergySaver* energy_saver) {
  return r.OnlyKeys({"coap_template", "device_templates", "on_error"}) &&
         r.String("coap_template", /*non_empty=*/false, &energy_saver->coap_template) &&
         r.String("device_templates", /*non_empty=*/false, &energy_saver->device_templates) &&
         r.Choice("on_error", kTranslationErrorPolicies, &energy_saver->on_error);
}

// A topic template checked here, so that a typo fails --check-config, not the first message.
bool TopicTemplate(TableReader& r, std::string_view key, std::string* out) {
  if (!r.String(key, /*non_empty=*/true, out)) return false;
  if (std::optional<std::string> error = sinks::CheckTopicTemplate(*out)) {
    return r.Fail(key, *error);
  }
  return true;
}

// Defined below, with LoadConfigFile: "PATH: cannot read: why".
Result<std::string, Error> ReadWholeFile(const std::string& path);

bool IsEnvironmentName(std::string_view name) {
  if (name.empty() || (name.front() >= '0' && name.front() <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// `${NAME}` in a secret's value replaced by the environment variable NAME, so that a password
// (or the path of its file, e.g. "${CREDENTIALS_DIRECTORY}/coapgate-mqtt") need not be written
// into the file. "$${" is a literal "${"; any other '$' stays as it is. `dotted_key` is the
// key's full name. An unset variable is an error, not "": an empty password would only fail
// later, at the broker, far from its cause. Errors never quote the value (it is a secret).
bool ExpandEnvironment(TableReader& r, std::string_view dotted_key, std::string* value) {
  std::string out;
  size_t at = 0;
  for (;;) {
    const size_t open = value->find("${", at);
    if (open == std::string::npos) break;
    if (open > 0 && (*value)[open - 1] == '$') {  // "$${": the literal text "${"
      out.append(*value, at, open - 1 - at).append("${");
      at = open + 2;
      continue;
    }
    const size_t close = value->find('}', open + 2);
    if (close == std::string::npos) {
      return r.FailAt(dotted_key, "unterminated \"${\" (write ${NAME} for the environment variable "
                                  "NAME, $${ for a literal ${)");
    }
    const std::string name = value->substr(open + 2, close - open - 2);
    if (!IsEnvironmentName(name)) {
      return r.FailAt(dotted_key, "invalid environment variable name in the ${...} at character " +
                                      std::to_string(open + 1) +
                                      " (letters, digits and '_'; write $${ for a literal ${)");
    }
    const char* text = std::getenv(name.c_str());
    if (text == nullptr) return r.FailAt(dotted_key, "environment variable " + name + " is not set");
    out.append(*value, at, open - at).append(text);
    at = close + 1;
  }
  out.append(*value, at);
  *value = std::move(out);
  return true;
}

// The file `path` names, as a secret: its content less one trailing newline (what `echo` and
// editors add). Unreadable: "<source>: <key>: PATH: cannot read: <strerror>".
bool ReadSecretFile(TableReader& r, std::string_view key, const std::string& path,
                    std::string* out) {
  auto text = ReadWholeFile(path);
  if (!text) return r.Fail(key, text.error().message);
  if (text->ends_with('\n')) text->pop_back();
  if (text->find('\0') != std::string::npos) {
    return r.Fail(key, OneLineForMessage(path) + ": must not contain NUL characters");
  }
  *out = std::move(*text);
  return true;
}

// A secret given either inline (`key`) or as a file (`file_key`), never both; ${NAME} expands
// in either. An absent pair leaves `out` as is.
bool Secret(TableReader& r, std::string_view key, std::string_view file_key, std::string* out) {
  if (r.Find(key) != nullptr && r.Find(file_key) != nullptr) {
    return r.Fail(file_key, "conflicts with " + r.KeyPath(key) + "; give the secret once");
  }
  if (r.Find(key) != nullptr) {
    return r.String(key, /*non_empty=*/false, out) && ExpandEnvironment(r, r.KeyPath(key), out);
  }
  if (r.Find(file_key) == nullptr) return true;
  std::string path;
  return r.String(file_key, /*non_empty=*/true, &path) &&
         ExpandEnvironment(r, r.KeyPath(file_key), &path) && ReadSecretFile(r, file_key, path, out);
}

bool ReadRestart(TableReader& r, Config::Restart* restart) {
  if (!(r.OnlyKeys({"state_file", "key_file", "max_age_s"}) &&
        r.String("state_file", /*non_empty=*/false, &restart->state_file) &&
        r.String("key_file", /*non_empty=*/false, &restart->key_file) &&
        r.Integer<uint32_t>("max_age_s", 1, 7 * 86400, &restart->max_age_s))) {
    return false;
  }
  if (restart->state_file.empty()) return true;
  if (restart->key_file.empty()) {
    return r.Fail("key_file", "is required with restart.state_file (the saved sessions hold "
                              "keys and are only ever written encrypted)");
  }
  if (!ExpandEnvironment(r, r.KeyPath("key_file"), &restart->key_file) ||
      !ReadSecretFile(r, "key_file", restart->key_file, &restart->key)) {
    return false;
  }
  std::string_view key = restart->key;
  while (!key.empty() && (key.back() == '\r' || key.back() == ' ' || key.back() == '\n')) {
    key.remove_suffix(1);
  }
  if (key.size() != 64 || !IsStrictHex(key)) {
    return r.Fail("key_file", OneLineForMessage(restart->key_file) +
                                  ": must hold 64 hex digits (e.g. `openssl rand -hex 32`)");
  }
  return true;
}

bool ReadMqttSink(TableReader& r, MqttSinkConfig* mqtt) {
  if (!(r.OnlyKeys({"type", "host", "port", "qos", "protocol", "client_id", "username",
                    "password", "password_file", "tls", "ca_file", "cert_file", "key_file", "topic_template",
                    "error_topic", "location_topic", "lifecycle_topic", "format", "connections", "max_inflight", "keepalive_s"},
                   "for an mqtt sink") &&
        r.String("host", /*non_empty=*/true, &mqtt->host) &&
        r.Integer<uint16_t>("port", 1, 65535, &mqtt->port) &&
        r.Integer("qos", 0, 1, &mqtt->qos) && r.Choice("protocol", kMqttProtocols, &mqtt->protocol) &&
        r.String("client_id", /*non_empty=*/false, &mqtt->client_id) &&
        r.String("username", /*non_empty=*/false, &mqtt->username) &&
        Secret(r, "password", "password_file", &mqtt->password) &&
        r.Boolean("tls", &mqtt->tls) &&
        r.String("ca_file", /*non_empty=*/false, &mqtt->ca_file) &&
        r.String("cert_file", /*non_empty=*/false, &mqtt->cert_file) &&
        r.String("key_file", /*non_empty=*/false, &mqtt->key_file) &&
        TopicTemplate(r, "topic_template", &mqtt->topic_template) &&
        TopicTemplate(r, "error_topic", &mqtt->error_topic) &&
        TopicTemplate(r, "location_topic", &mqtt->location_topic) &&
        TopicTemplate(r, "lifecycle_topic", &mqtt->lifecycle_topic) &&
        r.Choice("format", kMqttFormats, &mqtt->format) &&
        r.Integer("connections", 1, 64, &mqtt->connections) &&
        r.Integer("max_inflight", 1, 65535, &mqtt->max_inflight) &&
        r.Integer("keepalive_s", 5, 3600, &mqtt->keepalive_s))) {
    return false;
  }
  if (mqtt->format == MqttFormat::kRaw && mqtt->protocol != 5) {
    return r.Fail("format", "\"raw\" carries the envelope fields as MQTT v5 user properties, "
                            "so it needs protocol = \"5\"");
  }
  if (mqtt->cert_file.empty() != mqtt->key_file.empty()) {
    return r.Fail(mqtt->cert_file.empty() ? "cert_file" : "key_file",
                  "cert_file and key_file go together (a TLS client certificate and its key)");
  }
  if (!mqtt->tls && (!mqtt->ca_file.empty() || !mqtt->cert_file.empty())) {
    return r.Fail(mqtt->ca_file.empty() ? "cert_file" : "ca_file", "needs tls = true");
  }
  if (mqtt->password.size() > 0 && mqtt->username.empty()) {
    return r.Fail(r.Find("password") != nullptr ? "password" : "password_file", "needs a username");
  }
  return true;
}

// librdkafka names contain dots, and TOML reads an unquoted `linger.ms = 5` as a nested
// table, so the hint shows the quoted form.
bool ReadKafkaProperties(TableReader& r, KafkaSinkConfig* kafka) {
  std::vector<std::pair<std::string, std::string>> properties;
  for (const auto& [key, node] : r.table()) {
    const auto* value = node.as_string();
    if (value == nullptr) {
      return r.Fail(key.str(), "must be a string (got " + Got(node) +
                                   "); librdkafka properties are strings and names with dots "
                                   "need quotes, e.g. \"linger.ms\" = \"5\"");
    }
    if (value->get().find('\0') != std::string::npos || key.str().find('\0') != std::string::npos) {
      return r.Fail(key.str(), "must not contain NUL characters");
    }
    // Two spellings of one setting would leave librdkafka to pick a winner silently.
    if (key.str() == "bootstrap.servers" || key.str() == "metadata.broker.list") {
      return r.Fail(key.str(), "conflicts with brokers; give the broker list once, in brokers");
    }
    properties.emplace_back(std::string(key.str()), value->get());
  }
  kafka->properties = std::move(properties);
  return true;
}

// The SASL password: properties."sasl.password" (with ${NAME} expanded) or sasl_password_file,
// never both; it ends up as the property, in name order like the others.
bool ReadKafkaSaslPassword(TableReader& r, KafkaSinkConfig* kafka) {
  constexpr std::string_view kProperty = "sasl.password";
  auto property = std::find_if(kafka->properties.begin(), kafka->properties.end(),
                               [&](const auto& entry) { return entry.first == kProperty; });
  if (property != kafka->properties.end()) {
    if (r.Find("sasl_password_file") != nullptr) {
      return r.Fail("sasl_password_file", "conflicts with " + Child(r.KeyPath("properties"), kProperty) +
                                              "; give the secret once");
    }
    return ExpandEnvironment(r, Child(r.KeyPath("properties"), kProperty),
                             &property->second);
  }
  if (r.Find("sasl_password_file") == nullptr) return true;
  std::string path;
  std::string password;
  if (!r.String("sasl_password_file", /*non_empty=*/true, &path) ||
      !ExpandEnvironment(r, r.KeyPath("sasl_password_file"), &path) ||
      !ReadSecretFile(r, "sasl_password_file", path, &password)) {
    return false;
  }
  auto at = std::find_if(kafka->properties.begin(), kafka->properties.end(),
                         [&](const auto& entry) { return entry.first > kProperty; });
  kafka->properties.emplace(at, std::string(kProperty), std::move(password));
  return true;
}

bool ReadKafkaSink(TableReader& r, KafkaSinkConfig* kafka) {
  if (!r.OnlyKeys({"type", "brokers", "topic", "error_topic", "location_topic", "lifecycle_topic",
                   "properties",
                   "sasl_password_file"},
                  "for a kafka sink")) {
    return false;
  }
  for (const std::string_view key : {"brokers", "topic"}) {
    if (r.Find(key) == nullptr) return r.Fail(key, "required for a kafka sink");
  }
  return r.String("brokers", /*non_empty=*/true, &kafka->brokers) &&
         r.String("topic", /*non_empty=*/true, &kafka->topic) &&
         r.String("error_topic", /*non_empty=*/true, &kafka->error_topic) &&
         r.String("location_topic", /*non_empty=*/true, &kafka->location_topic) &&
         r.String("lifecycle_topic", /*non_empty=*/true, &kafka->lifecycle_topic) &&
         r.Section("properties",
                   [&](TableReader& properties) { return ReadKafkaProperties(properties, kafka); }) &&
         ReadKafkaSaslPassword(r, kafka);
}

bool ReadSink(TableReader& r, SinkConfig* sink) {
  if (r.Find("type") == nullptr) {
    return r.Fail("type", "required: one of " + ListNames(kSinkKinds));
  }
  SinkKind kind = SinkKind::kFile;
  if (!r.Choice("type", kSinkKinds, &kind)) return false;
  switch (kind) {
    case SinkKind::kFile: {
      FileSinkConfig file;
      if (!r.OnlyKeys({"type", "path"}, "for a file sink") ||
          !r.String("path", /*non_empty=*/true, &file.path)) {
        return false;
      }
      *sink = SinkConfig{"file", std::move(file)};
      return true;
    }
    case SinkKind::kMqtt: {
      MqttSinkConfig mqtt;
      if (!ReadMqttSink(r, &mqtt)) return false;
      *sink = SinkConfig{"mqtt", std::move(mqtt)};
      return true;
    }
    case SinkKind::kKafka: {
      KafkaSinkConfig kafka;
      if (!ReadKafkaSink(r, &kafka)) return false;
      *sink = SinkConfig{"kafka", std::move(kafka)};
      return true;
    }
  }
  return false;
}

// `[[sinks]]` replaces the default stdout sink as a whole.
bool ReadSinks(TableReader& root, Errors* errors, std::vector<SinkConfig>* out) {
  const toml::node* node = root.Find("sinks");
  if (node == nullptr) return true;
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    return root.Fail("sinks",
                     "must be an array of tables, written [[sinks]] (got " + Got(*node) + ")");
  }
  if (array->empty()) return root.Fail("sinks", "at least one sink is required");
  std::vector<SinkConfig> sinks(array->size());
  for (size_t i = 0; i < array->size(); ++i) {
    const toml::node& element = *array->get(i);
    const toml::table* table = element.as_table();
    if (table == nullptr) {
      return errors->Fail(Element("sinks", i), "must be a table (got " + Got(element) + ")");
    }
    TableReader reader(*table, Element("sinks", i), errors);
    if (!ReadSink(reader, &sinks[i])) return false;
  }
  // Two writers appending to one file would interleave their lines.
  for (size_t i = 0; i < sinks.size(); ++i) {
    const auto* file = std::get_if<FileSinkConfig>(&sinks[i].settings);
    if (file == nullptr) continue;
    for (size_t j = 0; j < i; ++j) {
      const auto* earlier = std::get_if<FileSinkConfig>(&sinks[j].settings);
      if (earlier != nullptr && earlier->path == file->path) {
        return errors->Fail(
            Element("sinks", i) + ".path",
            "same file as sinks[" + std::to_string(j) + "] (" + QuoteForMessage(file->path) + ")");
      }
    }
  }
  *out = std::move(sinks);
  return true;
}

bool ReadConfig(const toml::table& root, Errors* errors, Config* config) {
  TableReader r(root, "", errors);
  return r.OnlyKeys({"server", "admin", "devices", "coap", "bootstrap", "dtls", "restart",
                     "energy_saver", "log", "sinks"}) &&
         r.Section("server", [&](TableReader& t) { return ReadServer(t, &config->server); }) &&
         r.Section("admin", [&](TableReader& t) { return ReadAdmin(t, &config->admin); }) &&
         r.Section("devices", [&](TableReader& t) { return ReadDevices(t, &config->devices); }) &&
         r.Section("coap", [&](TableReader& t) { return ReadCoap(t, &config->coap); }) &&
         r.Section("bootstrap",
                   [&](TableReader& t) { return ReadBootstrap(t, &config->bootstrap); }) &&
         r.Section("dtls", [&](TableReader& t) { return ReadDtls(t, &config->dtls); }) &&
         r.Section("restart", [&](TableReader& t) { return ReadRestart(t, &config->restart); }) &&
         r.Section("energy_saver",
                   [&](TableReader& t) { return ReadEnergySaver(t, &config->energy_saver); }) &&
         r.Section("log", [&](TableReader& t) { return ReadLog(t, &config->log); }) &&
         ReadSinks(r, errors, &config->sinks);
}

// The whole file, or why it cannot be read: the system's reason (kEnvironment) or, for a file
// too large to be a configuration, ours (kBadInput). Messages are "PATH: cannot read: why".
Result<std::string, Error> ReadWholeFile(const std::string& path) {
  const auto failure = [&](ErrorKind kind, std::string_view why) {
    return tl::unexpected<Error>(
        Error{kind, OneLineForMessage(path) + ": cannot read: " + std::string(why)});
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return failure(ErrorKind::kEnvironment, std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  std::string out;
  char buffer[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failure(ErrorKind::kEnvironment, std::strerror(errno));
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > kMaxConfigBytes) {
      return failure(ErrorKind::kBadInput,
                     "larger than " + std::to_string(kMaxConfigBytes) + " bytes");
    }
    out.append(buffer, static_cast<size_t>(n));
  }
}

}  // namespace

Result<Config, Error> ParseConfig(std::string_view toml_text,
                                  std::string_view source_name) noexcept {
  auto root = ParseToml(toml_text, source_name);
  if (!root) return FailBadInput(std::move(root).error());
  Errors errors(source_name);
  Config config;
  if (!ReadConfig(*root, &errors, &config)) return FailBadInput(errors.Take());
  // Rejecting an untranslatable payload means answering 4.00, which needs the answer to wait
  // for the publisher; with ack = "enqueue" the 2.04 has already left.
  if (config.energy_saver.on_error == TranslationErrorPolicy::kReject &&
      config.coap.ack == AckMode::kEnqueue) {
    return FailBadInput(OneLineForMessage(source_name) +
                        ": energy_saver.on_error: \"reject\" needs coap.ack = \"sink\" (with "
                        "\"enqueue\" the 2.04 leaves before translation)");
  }
  return config;
}

Result<Config, Error> LoadConfigFile(const std::string& path) noexcept {
  auto text = ReadWholeFile(path);
  if (!text) return tl::unexpected<Error>(std::move(text).error());
  auto config = ParseConfig(*text, path);
  if (config) config->source_path = path;
  return config;
}

std::string ToString(IoBackend io) { return NameOf(kIoBackends, io); }
std::string ToString(AckMode ack) { return NameOf(kAckModes, ack); }
std::string ToString(LogLevel level) { return NameOf(kLogLevels, level); }
std::string ToString(LogFormat format) { return NameOf(kLogFormats, format); }

Result<LogLevel, std::string> ParseLogLevel(std::string_view text) {
  for (const Named<LogLevel>& choice : kLogLevels) {
    if (choice.name == text) return choice.value;
  }
  return Fail("must be one of " + ListNames(kLogLevels) + " (got " + QuoteForMessage(text) + ")");
}

}  // namespace coapgate::config
