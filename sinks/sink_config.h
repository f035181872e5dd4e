// The settings of each sink type, as the configuration file gives them (docs/configuration.md). Plain
// values: the engine's config parser fills them, the sinks read them at construction.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace coapgate::sinks {

struct FileSinkConfig {
  std::string path = "-";  // "-" = stdout

  bool operator==(const FileSinkConfig&) const = default;
};

enum class MqttFormat : uint8_t {
  kEnvelope,  ///< the docs/downstream.md JSON envelope as the payload
  kRaw,       ///< the device's bytes as they came, envelope fields as MQTT v5 user properties
};

struct MqttSinkConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 1883;
  int qos = 1;              // 0 or 1; with 1 the 2.04 waits for the PUBACK
  int protocol = 5;         // 5 (MQTT v5) or 4 (MQTT 3.1.1; written "3.1.1" in the file)
  std::string client_id;    // empty: "coapgate-<host name>-<pid>"; "-<n>" is appended per connection
  std::string username;     // empty: no authentication
  std::string password;
  bool tls = false;
  std::string ca_file;      // TLS: CA bundle; empty = the system's (/etc/ssl/certs)
  std::string cert_file;    // TLS client certificate (optional, with key_file)
  std::string key_file;
  // Placeholders {iccid}, {imsi}, {t}; without a topic, "{t}" and the '/' before it vanish.
  std::string topic_template = "{iccid}/{t}";
  std::string error_topic = "error";  // where ERROR events go (reference §6.2)
  std::string location_topic = "location";  // where LOCATION events go (same placeholders)
  std::string lifecycle_topic = "lifecycle";  // where LIFECYCLE events go (same placeholders)
  MqttFormat format = MqttFormat::kEnvelope;
  int connections = 1;          // 1..64 broker connections = publisher workers
  int max_inflight = 1000;      // unacknowledged publishes per connection; past it, 5.03
  int keepalive_s = 10;         // MQTT keepalive: how fast a hung broker is noticed

  bool operator==(const MqttSinkConfig&) const = default;
};

struct KafkaSinkConfig {
  std::string brokers;               // non-empty: librdkafka's bootstrap.servers
  std::string topic;                 // non-empty
  std::string error_topic = "error"; // where ERROR events go
  std::string location_topic = "location";  // where LOCATION events go
  std::string lifecycle_topic = "lifecycle";  // where LIFECYCLE events go
  // [sinks.properties], handed to librdkafka as is after coapgate's defaults, ordered by name.
  std::vector<std::pair<std::string, std::string>> properties;

  bool operator==(const KafkaSinkConfig&) const = default;
};

// Invariant: `type` is "file", "mqtt" or "kafka" and names the alternative `settings` holds.
struct SinkConfig {
  std::string type;
  std::variant<FileSinkConfig, MqttSinkConfig, KafkaSinkConfig> settings;

  bool operator==(const SinkConfig&) const = default;
};

}  // namespace coapgate::sinks
