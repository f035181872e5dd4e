// Config: coapgate's configuration file (docs/configuration.md), parsed and validated into plain values.
//
// Control plane only (startup, `--check-config`, SIGHUP): allocates freely and never throws;
// running out of memory terminates, as everywhere in coapgate. Every key has a default, so an
// empty file is Config{}. Every error is one line, "<source>: <dotted.key>: <reason>", so
// `coapgate --check-config` can print it as is and exit 2 (docs/cli.md). A Config is a plain value;
// any thread may read a const one.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/result.h"
#include "sinks/sink_config.h"

namespace coapgate::config {

// One UDP listen address. `host` is the address literal without brackets ("0.0.0.0", "::"),
// ready for inet_pton(); an IPv6 host was written bracketed ("[::]:5683"). Port 0 asks the
// kernel for an ephemeral port (tests bind "127.0.0.1:0"). `text` is the entry as written, for
// logs and error messages.
struct ListenAddress {
  std::string host;
  uint16_t port = 0;
  std::string text;

  bool operator==(const ListenAddress&) const = default;
};

enum class IoBackend : uint8_t {
  kAuto,      ///< io_uring when the kernel (and seccomp) allow it, else recvmmsg
  kIoUring,   ///< io_uring or fail at startup
  kRecvmmsg,  ///< recvmmsg/sendmmsg only
};

// When a 2.04 may leave (docs/delivery.md).
// Where the device registry lives: the CSV file of one node, or a PostgreSQL table that several
// nodes share.
enum class DeviceBackend : uint8_t { kCsv, kPostgres };

enum class AckMode : uint8_t {
  kSink,     ///< after every configured sink accepted the message
  kEnqueue,  ///< once the message is on the bounded sink queue
};

enum class TranslationErrorPolicy : uint8_t { kAccept, kReject };

// [log] (docs/operations.md "Logs"): the least severe level written, and the line format.
enum class LogLevel : uint8_t { kDebug, kInfo, kWarn, kError };
enum class LogFormat : uint8_t {
  kText,  ///< "2026-12-02T10:00:00.123 info message"
  kJson,  ///< one object per line: {"ts", "level", "msg", and the call site's fields}
};

using sinks::FileSinkConfig;
using sinks::KafkaSinkConfig;
using sinks::MqttFormat;
using sinks::MqttSinkConfig;

using sinks::SinkConfig;

struct Config {
  struct Server {
    std::vector<ListenAddress> coap_listen{ListenAddress{"0.0.0.0", 5683, "0.0.0.0:5683"}};
    std::vector<ListenAddress> coaps_listen{ListenAddress{"0.0.0.0", 5684, "0.0.0.0:5684"}};
    int shards = 0;  // 0 = one per online CPU
    IoBackend io = IoBackend::kAuto;
    uint32_t receive_buffer_bytes = 4 << 20;  // SO_RCVBUF per socket
    // Where the running process waits for `coapgate --take-over` (engine/takeover_channel.h);
    // empty: devices.state + ".takeover".
    std::string takeover_socket;
    uint32_t drain_timeout_ms = 5000;         // SIGTERM: how long pending requests may finish

    bool operator==(const Server&) const = default;
  } server;

  // The admin HTTP listener (/metrics, /healthz, /readyz); loopback by default, off when
  // `listen` is "".
  struct Admin {
    bool enabled = true;
    ListenAddress listen{"127.0.0.1", 9683, "127.0.0.1:9683"};

    bool operator==(const Admin&) const = default;
  } admin;

  struct Devices {
    DeviceBackend backend = DeviceBackend::kCsv;  // where the registry lives
    std::string file = "devices.csv";         // the registry CSV (docs/registry.md)
    // Durable bootstrap state (SQLite). Unused with backend = "postgres": the state is then
    // the shared database's table coapgate_bootstrap (registry/postgres_key_store.h).
    std::string state = "coapgate-state.db";
    // A reload of the CSV (SIGHUP, SIGUSR2) that would remove more than this share of the
    // registered devices is refused and the previous registry kept: a devices file truncated
    // at a row boundary is a valid, smaller registry. 100 = any reload is applied.
    uint32_t reload_max_removed_percent = 10;

    // backend = "postgres": the shared registry of several nodes (docs/cluster.md).
    struct Postgres {
      std::string dsn;  // libpq connection string or URI; the password via passfile/PGPASSWORD
      // The last registry loaded from the database, for a start while it is unreachable.
      std::string snapshot = "registry-snapshot.csv";

      bool operator==(const Postgres&) const = default;
    } postgres;

    bool operator==(const Devices&) const = default;
  } devices;

  struct Coap {
    uint32_t exchange_lifetime_s = 247;  // dedup lifetime of a CON (RFC 7252 EXCHANGE_LIFETIME)
    uint32_t non_lifetime_s = 145;       // dedup lifetime of a NON (RFC 7252 NON_LIFETIME)
    uint32_t max_payload = 1024;         // larger payloads get 4.13
    uint32_t response_budget_ms = 1500;  // under the client's 2 s ACK_TIMEOUT; past it, 5.03
    AckMode ack = AckMode::kSink;
    uint32_t dedup_per_device = 4;  // exchanges remembered per device (K), 1..16
    uint32_t dedup_devices = 0;     // device records per shard; 0 = sized from the registry
    uint32_t dedup_capacity = 0;    // obsolete and ignored (0 = absent); the server warns
    uint32_t inflight_capacity = 8192;  // accepted-but-unanswered messages per shard
    uint32_t busy_max_age_s = 5;        // 5.03 Max-Age base; replies jitter it in [base, 2*base]

    bool operator==(const Coap&) const = default;
  } coap;

  struct Bootstrap {
    std::string coaps_url = "coaps://127.0.0.1:5684";  // third field of the bootstrap reply
    uint32_t regenerate_after_s = 300;                 // docs/bootstrap-and-dtls.md: new PSK only after this long

    bool operator==(const Bootstrap&) const = default;
  } bootstrap;

  // coaps:// (docs/bootstrap-and-dtls.md). Limits are per shard.
  struct Dtls {
    uint32_t max_sessions = 100000;        // established + handshaking; past it, stale first
    uint32_t max_handshakes = 2048;        // unfinished handshakes; past it, refused
    uint32_t max_handshakes_per_source = 8;  // of those, from one source IP address
    uint32_t handshake_timeout_ms = 15000;  // an unfinished handshake is dropped after this
    uint32_t idle_timeout_s = 1800;         // a session silent this long is evicted
    std::string identity_hint;              // empty: none (node-dtls-client fails on one)

    bool operator==(const Dtls&) const = default;
  } dtls;

  // Planned restarts (docs/operations.md): on SIGTERM, after draining, the DTLS sessions and
  // answered exchanges are saved encrypted to state_file; the next start loads them if the
  // file is at most max_age_s old, then deletes it. Off while state_file is "".
  struct Restart {
    std::string state_file;
    std::string key_file;  // 64 hex digits (a 256-bit AES-GCM key); required with state_file
    std::string key;       // key_file's text, read and checked when the config is parsed
    uint32_t max_age_s = 600;

    bool operator==(const Restart&) const = default;
  } restart;

  struct EnergySaver {
    std::string coap_template;  // path to the global CoAP template JSON; empty = off
    // Optional CSV `iccid,template` giving devices their own template (a coapgate extension);
    // those devices use it instead of coap_template. Reloaded with the devices on SIGHUP.
    std::string device_templates;
    // A payload the template cannot translate: accept (2.04, an ERROR event carries the raw
    // payload downstream, as the reference system does) or reject (4.00, ERROR event only).
    TranslationErrorPolicy on_error = TranslationErrorPolicy::kAccept;

    bool operator==(const EnergySaver&) const = default;
  } energy_saver;

  // Read at startup only: SIGHUP re-reads the devices and templates, not this file.
  struct Log {
    LogLevel level = LogLevel::kInfo;
    LogFormat format = LogFormat::kText;

    bool operator==(const Log&) const = default;
  } log;

  // At least one. `[[sinks]]` in a file replaces this default.
  std::vector<SinkConfig> sinks{SinkConfig{"file", FileSinkConfig{}}};

  // The file LoadConfigFile read (empty for the embedded defaults and ParseConfig): the
  // server re-reads devices.reload_max_removed_percent from it on SIGHUP.
  std::string source_path;

  bool operator==(const Config&) const = default;
};

// Parses and validates a configuration. `source_name` only labels errors (a path, or
// "<embedded>"). The first problem found is the error: "<source>: <dotted.key>: <reason>", e.g.
// "coapgate.toml: coap.max_payload: must be an integer in 1..65000 (got 0)"; a TOML syntax
// error is "<source>:<line>:<column>: <toml++ description>". Keys and values quoted in messages
// have control characters escaped, so an error never spans lines. Every error is kBadInput.
// Not quite pure: the secret keys (sinks' password, password_file, sasl_password_file and
// properties."sasl.password") expand ${NAME} from the environment and read the files named.
[[nodiscard]] Result<Config, Error> ParseConfig(std::string_view toml_text,
                                                std::string_view source_name) noexcept;

// Reads `path` (at most 1 MiB) and parses it with the path as source name. A file that cannot
// be read gives "<path>: cannot read: <strerror>" (kEnvironment), one too large
// "<path>: cannot read: larger than 1048576 bytes" (kBadInput).
[[nodiscard]] Result<Config, Error> LoadConfigFile(const std::string& path) noexcept;

// The spelling the configuration file uses: "auto", "io_uring", "recvmmsg"; "sink", "enqueue".
[[nodiscard]] std::string ToString(IoBackend io);
[[nodiscard]] std::string ToString(AckMode ack);
// "debug", "info", "warn", "error"; "text", "json".
[[nodiscard]] std::string ToString(LogLevel level);
[[nodiscard]] std::string ToString(LogFormat format);
// A level as the file and `--log-level` spell it; the error is "must be one of ... (got ...)".
[[nodiscard]] Result<LogLevel, std::string> ParseLogLevel(std::string_view text);

}  // namespace coapgate::config
