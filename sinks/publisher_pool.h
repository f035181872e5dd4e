// PublisherPool: the publisher workers and the sinks each of them drives, built from the
// configuration's [[sinks]].
//
// The number of workers (lanes) is the largest `connections` of the MQTT sinks, 1 without
// any: each worker owns one instance of every configured sink (its own broker connection, its
// own Kafka producer, its own batch for a shared output file), so a message needs no hand-over
// between threads after the shard's queue.
//
// Thread contract: control thread only; the workers run on their own threads after Start.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "sinks/file_output.h"
#include "sinks/handoff.h"
#include "sinks/publisher_worker.h"
#include "sinks/sink_config.h"
#include "common/snapshot_holder.h"
#include "sinks/template_set.h"

namespace coapgate::sinks {

class PublisherPool {
 public:
  enum class Mode : uint8_t {
    kServe,      ///< open the files, set every sink up
    kCheckOnly,  ///< --check-config: files are checked, not created; the pool is not started
  };
  // Opens files and sets up every sink; connects nothing yet (a broker absent at start is
  // fine: its devices get 5.03 until it is reachable; librdkafka starts its threads, which
  // may open connections). Errors: "sinks[<i>]: <reason>".
  static Result<std::unique_ptr<PublisherPool>, std::string> Create(
      const std::vector<SinkConfig>& sinks, Mode mode = Mode::kServe);
  ~PublisherPool();

  [[nodiscard]] uint32_t lanes() const noexcept { return static_cast<uint32_t>(workers_.size()); }
  // One per lane, for the shards (ShardOptions::publisher_wake_fds).
  [[nodiscard]] std::vector<int> wake_fds() const;
  // One flag per lane (ShardOptions::sinks_available).
  [[nodiscard]] const std::atomic<bool>* available_flags() const noexcept { return available_.get(); }

  void Start(const std::vector<Handoff*>& shards, const SnapshotHolder<TemplateSet>* templates,
             bool reject_untranslatable);
  // After the shards stopped: lets every worker publish what is queued and wait for its sinks,
  // up to `timeout_ms`; then abandons the rest (settled as failed: those devices never got
  // 2.04 in ack = "sink" mode). Returns false if anything had to be abandoned.
  bool Stop(uint32_t timeout_ms);

  // One configured sink's counters summed over the workers (its connections), for /metrics.
  struct SinkTotals {
    std::string label;  ///< "file:-", "mqtt://127.0.0.1:1883", "kafka:telemetry"
    uint64_t delivered = 0, failed = 0, refused = 0, connects = 0, disconnects = 0;
    uint64_t causes[static_cast<size_t>(SinkFailure::kCount_)] = {};
    DurationHistogram::Snapshot acked;  ///< publish to acknowledgement, delivered messages
  };
  // In configuration order; any thread (relaxed reads).
  [[nodiscard]] std::vector<SinkTotals> Totals() const;
  // "file:- delivered=10 | mqtt://127.0.0.1:1883 delivered=8 refused=2 down=2 ..." summed
  // over the workers, non-zero counters only (failure causes by their metric label).
  [[nodiscard]] std::string Summary() const;
  // SIGHUP: every file sink's output opens its path again (log rotation). Returns the errors,
  // one per output that kept its old file.
  [[nodiscard]] std::vector<std::string> ReopenFiles();
  // "file:-, mqtt://127.0.0.1:1883 (2 connections)" for the startup log.
  [[nodiscard]] std::string Describe() const;

 private:
  PublisherPool() = default;

  std::vector<SinkConfig> configs_;
  std::vector<std::shared_ptr<FileOutput>> files_;
  std::unique_ptr<std::atomic<bool>[]> available_;
  std::vector<std::unique_ptr<PublisherWorker>> workers_;
};

}  // namespace coapgate::sinks
