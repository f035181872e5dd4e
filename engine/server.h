// Server: the running coapgate process: the shards, the publishers, the device registry, the
// Energy Saver templates and the signals (SPEC §10): SIGTERM/SIGINT drain and exit 0, SIGHUP
// reloads the devices and the templates, SIGUSR1 logs the counters.
//
// Control plane: Create and Run on the main thread, which must have blocked SIGTERM, SIGINT,
// SIGHUP and SIGUSR1 before any thread was started (BlockServerSignals) so that only Run's
// sigtimedwait sees them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "codec/result.h"
#include "engine/bootstrap_service.h"
#include "engine/config.h"
#include "engine/psk_store.h"
#include "engine/registry_holder.h"
#include "engine/shard.h"
#include "sinks/publisher_pool.h"
#include "sinks/snapshot_holder.h"
#include "sinks/template_set.h"

namespace coapgate::engine {

void BlockServerSignals();

// Loads the devices file of `config`. A missing file is not an error (an empty registry:
// every device gets 4.01 until the file exists and SIGHUP is sent); an invalid one is.
Result<std::shared_ptr<const DeviceRegistry>, std::string> LoadDevices(const Config& config,
                                                                       bool* missing);

// Compiles the Energy Saver templates of `config` (global and per-device).
Result<std::shared_ptr<const sinks::TemplateSet>, std::string> LoadTemplates(const Config& config);

class Server {
 public:
  static Result<std::unique_ptr<Server>, std::string> Create(const Config& config);
  ~Server();

  // Serves until SIGTERM/SIGINT, then drains; returns the process exit code: 0, or 1 when the
  // sinks did not settle everything within server.drain_timeout_ms (a stalled output pipe, a
  // broker that stayed away): those messages were abandoned, and their devices never got 2.04
  // with coap.ack = "sink".
  int Run();

 private:
  explicit Server(const Config& config);
  void Reload();
  void LogCounters(const char* when) const;
  [[nodiscard]] std::string SummarizeDtls() const;
  void Drain();

  Config config_;
  std::unique_ptr<RegistryHolder> registry_;
  std::unique_ptr<sinks::SnapshotHolder<sinks::TemplateSet>> templates_;
  std::unique_ptr<sinks::PublisherPool> publishers_;
  std::unique_ptr<PskStore> psk_store_;        ///< devices.state: generated PSKs (SPEC §6)
  std::unique_ptr<BootstrapService> bootstrap_;  ///< stopped after the shards, before their sockets close
  std::vector<std::unique_ptr<Shard>> shards_;
  bool clean_ = true;  ///< false when shutdown had to abandon messages
};

}  // namespace coapgate::engine
