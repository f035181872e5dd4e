// PublisherWorker: one thread that serves one lane of every shard's Handoff. It takes each
// accepted message, translates it with the Energy Saver if a template applies (on this thread,
// so the shards never pay for it), formats its event once (docs/downstream.md), offers it to every sink
// the worker owns, and completes the message back to its shard when all sinks have settled it:
// accepted only if every sink delivered (docs/delivery.md; reliability I1, worst status wins). A
// translated message whose template marks a location also becomes a LOCATION event, offered
// to every sink after the TELEMETRY_DATA under the same ticket: its 2.04 waits for both.
//
// It also publishes, for the shards of its lane, whether all its sinks are available, so that
// they answer 5.03 at once while a sink is known down instead of queueing (circuit breaking).
//
// Thread contract: construction, AddSink, Start, RequestStop, GiveUp and Join on the control
// thread; everything else on the worker thread. The sinks are the worker's alone once Start
// ran. The Handoffs and the template holder outlive the worker.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "energy_saver/translator.h"
#include "sinks/handoff.h"
#include "sinks/sink.h"
#include "common/snapshot_holder.h"
#include "sinks/template_set.h"

namespace coapgate::sinks {

class PublisherWorker final : private Settlement {
 public:
  // `available` is this lane's flag for the shards; the worker writes it (may be null).
  PublisherWorker(uint32_t lane, std::atomic<bool>* available);
  ~PublisherWorker();
  PublisherWorker(const PublisherWorker&) = delete;
  PublisherWorker& operator=(const PublisherWorker&) = delete;

  // Where sinks created for this worker report (before Start).
  [[nodiscard]] Settlement* settlement() noexcept { return this; }
  void AddSink(std::unique_ptr<Sink> sink) { sinks_.push_back(std::move(sink)); }
  [[nodiscard]] const std::vector<std::unique_ptr<Sink>>& sinks() const noexcept { return sinks_; }

  // REQUIRES: at least one sink; not started. `templates` may be null (no Energy Saver).
  void Start(std::vector<Handoff*> shards, const SnapshotHolder<TemplateSet>* templates,
             bool reject_untranslatable);
  // Shards write 1 here after pushing to this worker's lane.
  [[nodiscard]] int wake_fd() const noexcept { return wake_fd_; }

  // Call after the shards have stopped: the worker publishes what is still queued, waits for
  // every sink to settle it, then exits. finished() turns true when that is done.
  void RequestStop() noexcept;
  // Also true for a worker that was never started (startup failed): nothing to wait for.
  [[nodiscard]] bool finished() const noexcept {
    return !started_ || finished_.load(std::memory_order_acquire);
  }
  // The stop deadline passed: sinks abandon what is outstanding (settled as failed) and the
  // thread exits at once.
  void GiveUp() noexcept;
  void Join();

 private:
  // Per (shard, slot): how many settlements are still due, and what they said so far.
  struct Pending {
    uint16_t remaining = 0;  ///< sinks x events (1, or 2 with a LOCATION), plus the worker's own
    bool failed = false;       ///< a sink refused or failed it: 5.03
    bool bad_payload = false;  ///< untranslatable and rejected: 4.00 if all sinks took the ERROR
  };

  void Run();
  // Publishes up to one batch from every shard; returns the number taken.
  size_t TakeBatch();
  void Publish(uint32_t shard_index, uint32_t slot);
  // A LIFECYCLE message (InflightMessage::lifecycle): formats its event and Offers it.
  void PublishLifecycle(uint32_t shard_index, uint32_t slot);
  // Offers `event` (and its `location`, when not null) to every sink under the slot's ticket
  // and sets up the slot's settlement.
  void Offer(uint32_t shard_index, uint32_t slot, const Event& event, const Event* location,
             bool bad_payload);
  // Translates m's payload with its device's template into json_; false with the error text
  // in error_ when the template cannot; true with json_size_ 0 when there is no template.
  bool Translate(const InflightMessage& m);
  void Settle(uint64_t ticket, bool delivered) noexcept override;
  void WaitForWork(bool busy);
  void WakeShards() noexcept;
  [[nodiscard]] size_t Outstanding() const noexcept;

  uint32_t lane_;
  std::atomic<bool>* available_;
  int wake_fd_ = -1;
  std::vector<std::unique_ptr<Sink>> sinks_;
  std::vector<Handoff*> shards_;
  std::vector<std::vector<Pending>> pending_;  ///< [shard][slot], sized at Start
  std::vector<uint32_t> woken_;                ///< shards completed into since the last wake
  std::vector<bool> needs_wake_;
  std::vector<pollfd> poll_fds_;

  const SnapshotHolder<TemplateSet>* templates_holder_ = nullptr;
  std::shared_ptr<const TemplateSet> templates_;
  uint64_t templates_generation_ = 0;
  bool reject_untranslatable_ = false;
  // One Translator per program in use (each holds its scratch); rebuilt after a reload.
  std::unordered_map<const energysaver::Program*, energysaver::Translator> translators_;
  std::vector<char> json_;  ///< the current message's translation
  size_t json_size_ = 0;
  std::array<char, 512> error_{};  ///< the current message's translation error text
  size_t error_size_ = 0;
  std::vector<char> envelope_;  ///< the current event's JSON
  std::vector<char> location_envelope_;  ///< the current message's LOCATION event, if any
  std::optional<energysaver::Translator::Location> location_;  ///< of the current message

  bool started_ = false;  ///< control thread only
  std::atomic<bool> stop_{false};
  std::atomic<bool> give_up_{false};
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

}  // namespace coapgate::sinks
