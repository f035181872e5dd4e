// Server: the running coapgate process: the shards, the publishers, the device registry, the
// Energy Saver templates and the signals (docs/cli.md): SIGTERM/SIGINT drain and exit 0, SIGHUP
// reloads the devices and the templates, SIGUSR2 the devices only, SIGUSR1 logs the counters.
// It also waits for a successor (`coapgate --take-over`, engine/takeover_channel.h) and hands
// it the listening sockets, then drains and exits 0.
//
// Control plane: Create and Run on the main thread, which must have blocked SIGTERM, SIGINT,
// SIGHUP, SIGUSR1 and SIGUSR2 before any thread was started (BlockServerSignals) so that only
// Run's signalfd sees them.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "admin/admin_server.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/result.h"
#include "bootstrap/bootstrap_service.h"
#include "config/config.h"
#include "registry/device_source.h"
#include "registry/postgres_change_follower.h"
#include "registry/postgres_key_store.h"
#include "registry/key_store.h"
#include "registry/registry_holder.h"
#include "engine/first_registration.h"
#include "engine/instance_lock.h"
#include "engine/restart_state.h"
#include "engine/service_notifier.h"
#include "engine/shard.h"
#include "engine/takeover_channel.h"
#include "sinks/publisher_pool.h"
#include "common/snapshot_holder.h"
#include "sinks/template_set.h"

namespace prometheus {
struct MetricFamily;
}  // namespace prometheus

namespace coapgate::engine {

void BlockServerSignals();

// Where the running process waits for a successor: server.takeover_socket, or
// devices.state + ".takeover" (the state file is one instance's alone).
[[nodiscard]] std::string TakeoverSocketPath(const config::Config& config);

// The source of the device registry `config` names: the CSV file of devices.file (a missing
// file loads as an empty registry: every device gets 4.01 until it exists and SIGHUP is sent).
std::unique_ptr<registry::DeviceSource> MakeDeviceSource(const config::Config& config);

// Compiles the Energy Saver templates of `config` (global and per-device).
Result<std::shared_ptr<const sinks::TemplateSet>, Error> LoadTemplates(const config::Config& config);

// An error of a part the configuration names (devices file, templates, sinks), told the way
// config errors are: "<config file>: <key>: <message>", so the operator knows which line to
// fix. `key` empty: the message already starts with its key ("sinks[0]: ..."). The config
// file is config.source_path, "(embedded defaults)" when there is none.
[[nodiscard]] std::string InConfig(const config::Config& config, std::string_view key,
                                   const std::string& message);
// The key whose file an error of LoadTemplates ("PATH: why") is about.
[[nodiscard]] std::string_view TemplateKey(const config::Config& config,
                                           const std::string& message);
// The key that names the devices' source: devices.file or devices.postgres.
[[nodiscard]] std::string_view DeviceSourceKey(const config::Config& config);

class Server {
 public:
  // The error's kind says whose fault a failed start is: kBadInput for the devices file, the
  // templates and sink settings, kEnvironment for sockets, the state file, files refused.
  // `take_over`: the sockets and instance locks come from the coapgate running with the same
  // listen addresses and shard count (its take-over socket), not from bind(2); it fails with
  // kEnvironment when there is none or it refuses.
  static Result<std::unique_ptr<Server>, Error> Create(const config::Config& config,
                                                       bool take_over = false);
  ~Server();

  // Serves until SIGTERM/SIGINT, then drains; returns the process exit code: 0, or 1 when the
  // sinks did not settle everything within server.drain_timeout_ms (a stalled output pipe, a
  // broker that stayed away): those messages were abandoned, and their devices never got 2.04
  // with coap.ack = "sink".
  int Run();

 private:
  explicit Server(const config::Config& config);
  void Reload();
  // The registry only: SIGHUP's second half, and all of SIGUSR2 (a registry change).
  void ReloadDevices();
  // SIGHUP: devices.reload_max_removed_percent from the config file again (the one key a
  // reload re-reads), so that an operator can let a deliberate mass removal through.
  void RereadReloadLimit();
  void LogCounters(const char* when) const;
  [[nodiscard]] std::string SummarizeDtls() const;
  // Every DTLS endpoint counter by name, summed over the shards (the SIGUSR1 summary and
  // /metrics read the same list).
  void ForEachDtlsCounter(const std::function<void(const char* name, uint64_t total)>& visit) const;
  // The admin listener's answers (engine/server_metrics.cc); called on its threads.
  [[nodiscard]] std::string MetricsText() const;
  [[nodiscard]] admin::Probe Healthz() const;
  [[nodiscard]] admin::Probe Readyz() const;
  // backend = "postgres": ", database: connected" or ", database: unavailable since <time>
  // (...)" for the /readyz body; "" for the CSV backend.
  [[nodiscard]] std::string DatabaseState() const;
  // The database families of /metrics (engine/server_metrics.cc).
  void AppendDatabaseFamilies(std::vector<prometheus::MetricFamily>& families) const;
  void Drain();
  // A connection on the take-over socket: a successor's request (HandOver) or `coapgate
  // upgrade` (Upgrade). True when a successor serves now: the caller drains and exits.
  [[nodiscard]] bool ServeTakeoverConnection();
  // The predecessor's side of a take-over, for the successor that sent `request`: done when
  // the successor serves; an error (logged) when it refused or failed, and this process
  // serves on, reading its sockets again.
  [[nodiscard]] Result<void, std::string> HandOver(std::unique_ptr<TakeoverChannel> successor,
                                                   const std::string& request);
  // `coapgate upgrade`: starts this executable's file (a new version after a package
  // upgrade) with --take-over as a child, so that it runs inside the same service, hands
  // over to it and tells the requester the outcome.
  [[nodiscard]] bool Upgrade(std::unique_ptr<TakeoverChannel> requester);
  // A SIGTERM or SIGINT waits to be read (the signals are blocked; sigpending sees them).
  [[nodiscard]] static bool StopPending();
  // Listens for a successor at the configured take-over socket (logs when it cannot).
  void ListenForSuccessor();
  // The admin listener (/metrics ...): started at Create, stopped for a successor to bind.
  [[nodiscard]] Result<void, std::string> StartAdmin();
  // Planned restarts (docs/operations.md, restart.*): LoadRestartState in Create once the
  // shards exist and before they start; SaveRestartState in Drain once they stopped. Both
  // control thread; no-ops while restart.state_file is "".
  void LoadRestartState();
  void SaveRestartState();
  // A restart state's sessions and exchanges into the shards (before they serve); the counts
  // also go to the restart metrics. Wipes `plaintext`. From the state file, or from the
  // predecessor of a take-over.
  struct Restored {
    uint64_t sessions = 0;
    uint64_t sessions_skipped = 0;
    uint64_t exchanges = 0;
    uint64_t exchanges_skipped = 0;
  };
  [[nodiscard]] Result<Restored, StateRefusal> RestoreState(std::string& plaintext);
  // The take-over's state (a memfd from the predecessor) into the shards, logged and counted
  // like a state file's; a refusal leaves the shards empty.
  void RestoreFromPredecessor(int fd);
  // What the sessions' socket numbers refer to: a state saved for other listeners is refused.
  [[nodiscard]] std::string ListenersFingerprint() const;
  // The shard the source-address steering sends `address`'s datagrams to.
  [[nodiscard]] uint32_t ShardOfAddress(const sockaddr* address) const;
  // STATUS= for the service manager: rate, devices, sessions.
  [[nodiscard]] std::string StatusLine(double datagrams_per_s) const;

  config::Config config_;
  uint32_t steering_seed_ = 0;  ///< of AttachSteering; ShardOfAddress agrees with it
  // Written by the control thread (load at start, save at drain), read by /metrics.
  struct RestartStats {
    std::atomic<uint64_t> sessions_restored{0};
    std::atomic<uint64_t> sessions_skipped{0};   ///< in the file, but ImportSession refused
    std::atomic<uint64_t> exchanges_restored{0};
    std::atomic<uint64_t> exchanges_skipped{0};  ///< duplicates, table full, session not back
    std::array<std::atomic<uint64_t>, kStateRefusalCount> refused{};  ///< by StateRefusal
    std::atomic<uint64_t> load_us{0};
    std::atomic<uint64_t> save_failed{0};
  } restart_;
  std::unique_ptr<InstanceLock> instance_lock_;  ///< one coapgate per UDP port
  std::unique_ptr<registry::DeviceSource> device_source_;  ///< loaded at start and on SIGHUP
  std::unique_ptr<registry::RegistryHolder> registry_;
  // backend = "postgres": follows the table's changes (raises SIGUSR2 at the process).
  std::unique_ptr<registry::PostgresChangeFollower> follower_;
  std::unique_ptr<SnapshotHolder<sinks::TemplateSet>> templates_;
  // backend = "postgres" only: the LIFECYCLE events. Declared before publishers_ so that it
  // outlives them (their workers read its Handoff until they stop); stopped before them.
  std::unique_ptr<FirstRegistration> first_registration_;
  std::unique_ptr<sinks::PublisherPool> publishers_;
  std::unique_ptr<registry::KeyStore> psk_store_;  ///< devices.state: the bootstrap's keys
  // backend = "postgres": psk_store_ as what it is, for /readyz and /metrics; else null.
  const registry::PostgresKeyStore* postgres_keys_ = nullptr;
  std::unique_ptr<bootstrap::BootstrapService> bootstrap_;  ///< stopped after the shards, before their sockets close
  std::vector<std::unique_ptr<Shard>> shards_;
  bool clean_ = true;
  ServiceNotifier notifier_;
  ProgressWatch progress_;
  // Published by the control thread for the admin listener's threads.
  std::atomic<bool> serving_{false};
  std::atomic<bool> draining_{false};
  std::atomic<bool> healthy_{true};
  std::atomic<bool> devices_missing_{false};
  std::atomic<uint64_t> reloads_{0};
  std::atomic<uint64_t> reloads_refused_{0};  ///< too many devices removed at once
  // The snapshot in force: when its load finished (Unix ms) and how long the source's Load took.
  std::atomic<uint64_t> registry_loaded_ms_{0};
  std::atomic<uint64_t> registry_load_us_{0};
  const uint64_t started_ms_ = WallMs();
  // A take-over: the predecessor, told "ready" once this process serves (Run), and the
  // listener where this process waits for its own successor.
  std::unique_ptr<TakeoverChannel> predecessor_;
  std::unique_ptr<TakeoverChannel> successor_;  ///< committed to: told "serving" before we exit
  std::unique_ptr<TakeoverListener> takeover_listener_;
  std::string self_exe_;  ///< /proc/self/exe at start: what `coapgate upgrade` starts
  std::unique_ptr<admin::AdminServer> admin_;  ///< stopped first: its handlers read the rest  ///< false when shutdown had to abandon messages
};

}  // namespace coapgate::engine
