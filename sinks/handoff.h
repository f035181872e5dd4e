// Handoff: the bounded, lock-free channel between one shard and the publisher workers.
//
// A shard copies each accepted request into one of its fixed in-flight slots (the only copy
// of the payload after the receive buffer), pushes the slot number onto the outbound queue of
// one lane, and later pops (slot, outcome) from the completions to answer the device. Slot
// memory is allocated once; nothing is allocated per message.
//
// A lane is one publisher worker: each (shard, lane) pair has its own outbound and completion
// queue, so every queue keeps exactly one producer and one consumer however many workers
// there are. The shard picks the lane per device (a device's messages stay in order on one
// broker connection).
//
// Ownership contract (the point of the type):
//   - slot allocation (Acquire/Release) and PushOutbound/PopCompletion: the shard thread only;
//   - between PushOutbound and the matching completion, the slot's message fields belong to
//     the lane's worker (read-only) and the shard does not touch them;
//   - outbound[lane] is single-producer (shard) single-consumer (worker `lane`);
//     completions[lane] the reverse. Each side wakes the other via eventfd.
#pragma once

#include <boost/lockfree/spsc_queue.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "common/limits.h"

namespace coapgate::sinks {


// One accepted device message, as the publishers see it.
struct InflightMessage {
  uint64_t received_ms = 0;  ///< Unix epoch ms at receipt
  uint16_t message_id = 0;
  uint8_t token_length = 0;
  uint8_t iccid_length = 0;
  uint8_t imsi_length = 0;
  uint8_t topic_length = 0;  ///< 0 = no topic
  uint16_t payload_length = 0;
  // Not a device message but its LIFECYCLE DEVICE_FIRST_TIME_REGISTERED event (the first
  // registration's own Handoff, engine/first_registration.h): only received_ms, ip, iccid
  // and imsi count.
  bool lifecycle = false;
  std::array<std::byte, 8> token{};
  std::array<uint8_t, 16> ip{};  ///< IPv6, or IPv4-mapped (::ffff:a.b.c.d)
  std::array<char, kMaxIccidLength> iccid{};
  std::array<char, kMaxImsiLength> imsi{};
  std::array<char, kMaxTopicLength> topic{};
  std::byte* payload = nullptr;  ///< the slot's own payload area (max_payload bytes)

  [[nodiscard]] std::string_view Iccid() const noexcept { return {iccid.data(), iccid_length}; }
  [[nodiscard]] std::string_view Imsi() const noexcept { return {imsi.data(), imsi_length}; }
  [[nodiscard]] std::string_view Topic() const noexcept { return {topic.data(), topic_length}; }
  [[nodiscard]] std::span<const std::byte> Token() const noexcept {
    return {token.data(), token_length};
  }
  [[nodiscard]] std::span<const std::byte> Payload() const noexcept {
    return {payload, payload_length};
  }
};

// How the publishers finished with a message; the shard turns it into the device's answer.
enum class Outcome : uint8_t {
  kAccepted,     ///< every sink took it: 2.04
  kUnavailable,  ///< a sink refused or failed: 5.03, the device retries
  kBadPayload,   ///< the Energy Saver could not translate it and policy rejects it: 4.00
};

class Handoff {
 public:
  // Allocates `capacity` slots with `max_payload` bytes each, the queues of `lanes` lanes
  // (1..64), and the shard's wake-up eventfd. Aborts if the eventfd cannot be created
  // (startup only).
  Handoff(uint32_t capacity, uint32_t max_payload, uint32_t lanes = 1);
  ~Handoff();
  Handoff(const Handoff&) = delete;
  Handoff& operator=(const Handoff&) = delete;

  [[nodiscard]] uint32_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] uint32_t max_payload() const noexcept { return max_payload_; }
  [[nodiscard]] uint32_t in_use() const noexcept { return capacity_ - free_count_; }
  [[nodiscard]] uint32_t lanes() const noexcept { return static_cast<uint32_t>(lanes_.size()); }
  // Messages in `lane`'s outbound queue that its worker has not taken yet. Any thread: two
  // atomic loads, never a lock; from a thread other than the two sides it is a gauge that may
  // be a moment old (the /metrics queue depth).
  [[nodiscard]] uint32_t queued(uint32_t lane) const noexcept {
    return static_cast<uint32_t>(lanes_[lane]->outbound.read_available());
  }

  // --- shard side ---------------------------------------------------------------------
  // A free slot number, or false when all are in flight (the caller answers 5.03).
  [[nodiscard]] bool Acquire(uint32_t* slot) noexcept;
  void Release(uint32_t slot) noexcept;
  [[nodiscard]] InflightMessage& message(uint32_t slot) noexcept { return messages_[slot]; }
  // False when the lane's queue is full; the slot stays the shard's.
  [[nodiscard]] bool PushOutbound(uint32_t lane, uint32_t slot) noexcept {
    return lanes_[lane]->outbound.push(slot);
  }
  // Pops one completion of any lane: the slot and how it ended.
  [[nodiscard]] bool PopCompletion(uint32_t* slot, Outcome* outcome) noexcept;
  // The fd that becomes readable when completions are waiting; DrainWake() resets it.
  [[nodiscard]] int wake_fd() const noexcept { return wake_fd_; }
  void DrainWake() noexcept;

  // --- publisher side -------------------------------------------------------------------
  [[nodiscard]] bool PopOutbound(uint32_t lane, uint32_t* slot) noexcept {
    return lanes_[lane]->outbound.pop(*slot);
  }
  [[nodiscard]] const InflightMessage& published(uint32_t slot) const noexcept {
    return messages_[slot];
  }
  // Never fails: each lane's completions have room for every slot, since each slot completes
  // once.
  void Complete(uint32_t lane, uint32_t slot, Outcome outcome) noexcept;
  // Wakes the shard after a batch of Complete calls.
  void WakeShard() noexcept;

 private:
  // Completions carry the outcome in the top two bits of the slot number.
  static constexpr uint32_t kOutcomeShift = 30;
  static constexpr uint32_t kSlotMask = (1u << kOutcomeShift) - 1;

  uint32_t capacity_;
  uint32_t max_payload_;
  std::unique_ptr<InflightMessage[]> messages_;
  std::unique_ptr<std::byte[]> payloads_;
  std::vector<uint32_t> free_;  ///< stack of free slots; shard only
  uint32_t free_count_;
  struct Lane {
    explicit Lane(uint32_t capacity) : outbound(capacity), completions(capacity) {}
    boost::lockfree::spsc_queue<uint32_t> outbound;
    boost::lockfree::spsc_queue<uint32_t> completions;
  };
  std::vector<std::unique_ptr<Lane>> lanes_;
  uint32_t next_lane_ = 0;  ///< where PopCompletion looks first: no lane starves the others
  int wake_fd_ = -1;
};

}  // namespace coapgate::sinks
