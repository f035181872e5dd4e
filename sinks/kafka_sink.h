// KafkaSink: one librdkafka idempotent producer, driven by one publisher worker (sink.h).
//
// Delivered means librdkafka's delivery report came back without error: with the defaults
// (acks=all, enable.idempotence=true) the partition leader and its in-sync replicas have the
// record, written once even across retries (reference §1.4, K02/K03). A delivery report with an
// error (message.timeout.ms passed, purge, permanent broker error) settles the ticket false.
//
// Circuit: the sink turns unavailable when librdkafka reports every broker down, after
// kOpenAfterFailures delivery failures in a row, or on a fatal producer error. While open,
// Publish refuses at once, except one probe message per second (half-open); the first
// successful delivery report closes it again. A fatal error (the idempotent producer lost its
// sequence state) never closes: the producer is unusable and needs a restart.
//
// Poll integration: librdkafka writes one byte to a pipe when its reply queue turns non-empty;
// the worker polls the pipe's read end and Service serves delivery reports and errors from
// the worker thread, so every Settle happens there (sink.h's thread contract).
//
// Thread contract: as sink.h. librdkafka's own threads only ever write the pipe and log.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "sinks/sink.h"
#include "sinks/sink_failure_log.h"
#include "sinks/sink_config.h"

// librdkafka's handle types, so that this header does not pull in rdkafka.h.
struct rd_kafka_s;
struct rd_kafka_topic_s;
struct rd_kafka_queue_s;

namespace coapgate::sinks {

class KafkaSink final : public Sink {
 public:
  // Builds the producer; does not wait for any broker. `worker` (0-based) goes into the
  // default client.id "coapgate-<worker>" and the label "kafka:<topic>#<worker>". Errors are
  // one line naming the property, e.g. "properties.linger.ms: <librdkafka's text>".
  // REQUIRES: `settlement` outlives the sink.
  static Result<std::unique_ptr<KafkaSink>, std::string> Create(const KafkaSinkConfig& config,
                                                                int worker, Settlement* settlement);
  // Abandons what is still outstanding (each such ticket settles false), then destroys the
  // producer. Bounded: a few seconds at most, even with every broker unreachable.
  ~KafkaSink() override;

  KafkaSink(const KafkaSink&) = delete;
  KafkaSink& operator=(const KafkaSink&) = delete;

  // Sink
  [[nodiscard]] const std::string& label() const noexcept override { return label_; }
  [[nodiscard]] bool Publish(const Event& event, uint64_t ticket) noexcept override;
  [[nodiscard]] int PollFd(short* events) noexcept override;
  void Service(short revents, uint64_t now_ms) noexcept override;
  [[nodiscard]] int TimeoutMs(uint64_t now_ms) const noexcept override;
  [[nodiscard]] size_t outstanding() const noexcept override { return live_; }
  [[nodiscard]] bool available() const noexcept override { return !open_ && !fatal_; }
  // While open, once a second: the next Publish is the probe that finds out about recovery.
  [[nodiscard]] bool probe_due() const noexcept override;
  // Purges librdkafka's queues and in-flight requests and serves the resulting delivery
  // reports for up to kAbandonMs; a ticket whose report still has not come is settled false
  // here and its report, should it come later, is ignored.
  void Abandon() noexcept override;

  // Delivery failures in a row that open the circuit: a broker that is up but never acks
  // (every message timing out) is as unusable as one that is down.
  static constexpr int kOpenAfterFailures = 8;
  // While open, at most one probe message per this many ms gets through.
  static constexpr uint64_t kProbeIntervalMs = 1000;
  // Abandon's bound on waiting for the purged messages' delivery reports.
  static constexpr int kAbandonMs = 2000;

 private:
  // librdkafka's C callbacks, defined in the .cc; they forward to the members below.
  struct Callbacks;
  friend struct Callbacks;

  enum class SlotState : uint8_t { kFree, kLive, kOrphaned };
  // librdkafka's per-message opaque is a slot index, not the ticket itself, so that Abandon can
  // settle a ticket whose delivery report is late and then recognise that report.
  struct Slot {
    uint64_t ticket = 0;
    SlotState state = SlotState::kFree;
    uint64_t published_us = 0;  ///< for counters_.acked
  };

  KafkaSink(std::string label, Settlement* settlement);
  [[nodiscard]] Result<void, std::string> Init(const KafkaSinkConfig& config, int worker);
  [[nodiscard]] uint32_t AcquireSlot(uint64_t ticket);
  void ReleaseSlot(uint32_t slot) noexcept;
  void OnDelivery(uint32_t slot, int err) noexcept;
  void OnError(int err, const char* reason) noexcept;
  void Open(const char* why) noexcept;

  std::string label_;
  Settlement* settlement_;
  rd_kafka_s* rk_ = nullptr;
  rd_kafka_topic_s* topic_ = nullptr;
  rd_kafka_topic_s* error_topic_ = nullptr;
  rd_kafka_topic_s* location_topic_ = nullptr;
  rd_kafka_topic_s* lifecycle_topic_ = nullptr;
  rd_kafka_queue_s* main_queue_ = nullptr;  ///< the reply queue, held for its IO event
  int wake_read_ = -1;
  int wake_write_ = -1;

  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  size_t live_ = 0;  ///< slots in kLive: produced, not yet settled

  bool open_ = false;   ///< circuit open: refusing, apart from probes
  bool fatal_ = false;  ///< the producer is dead for good
  int consecutive_failures_ = 0;
  uint64_t last_probe_ms_ = 0;
  SinkFailureLog failure_log_{label_};  ///< refusals and failed deliveries, by cause
};

}  // namespace coapgate::sinks
