// InflightTable: a shard's own bookkeeping for its in-flight slots (sinks::Handoff holds the
// messages themselves): where each reply goes, the exchange it completes, and the list of slots
// still unanswered, in arrival order.
//
// Thread contract: owned by one shard and touched only by its thread; no locks, no atomics.
// Allocation: the constructor only.
//
// Invariants:
//   - A slot is on the unanswered list iff it was Track()ed and not MarkAnswered() since.
//   - The list is in Track order. Every slot gets the same budget, so deadlines are
//     non-decreasing along it and the head has the earliest one; any slot unlinks in O(1)
//     (sinks with several connections complete out of order).
#pragma once

#include <sys/socket.h>
#include <netinet/in.h>

#include <cstdint>
#include <vector>

#include "dtls/dtls_endpoint.h"
#include "engine/exchange_memory.h"
#include "net/datagram_io.h"

namespace coapgate::engine {

class InflightTable {
 public:
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  struct Slot {
    ExchangeMemory::Handle exchange{};
    sockaddr_in6 peer{};  ///< large enough for both families
    socklen_t peer_length = 0;
    uint16_t socket = 0;
    net::LocalAddress local{};
    dtls::SessionId session = 0;  ///< DTLS: the session the reply is encrypted on; 0 = plain
    bool confirmable = false;
    bool answered = false;  ///< 2.04 (enqueue mode) or 5.03 (budget) already sent
    uint64_t deadline_ms = 0;
    uint64_t received_us = 0;  ///< the shard's monotonic clock in the turn that received it
    uint32_t prev = kNoSlot;  ///< unanswered list links; valid while !answered
    uint32_t next = kNoSlot;
  };

  explicit InflightTable(uint32_t capacity) : slots_(capacity) {}

  // REQUIRES: slot < capacity() (the Handoff's slot numbers).
  [[nodiscard]] Slot& operator[](uint32_t slot) noexcept { return slots_[slot]; }
  [[nodiscard]] const Slot& operator[](uint32_t slot) const noexcept { return slots_[slot]; }
  [[nodiscard]] uint32_t capacity() const noexcept {
    return static_cast<uint32_t>(slots_.size());
  }

  // Puts the slot at the tail of the unanswered list, due at `deadline_ms`.
  // REQUIRES: the slot is not on the list; deadline_ms >= every deadline already on it.
  void Track(uint32_t slot, uint64_t deadline_ms) noexcept;
  // Marks the slot answered and takes it off the list. REQUIRES: it is on the list.
  void MarkAnswered(uint32_t slot) noexcept;
  // The oldest unanswered slot (earliest deadline), or kNoSlot.
  [[nodiscard]] uint32_t oldest_unanswered() const noexcept { return head_; }
  // Its deadline, or UINT64_MAX when nothing is unanswered.
  [[nodiscard]] uint64_t next_deadline_ms() const noexcept {
    return head_ == kNoSlot ? UINT64_MAX : slots_[head_].deadline_ms;
  }

 private:
  std::vector<Slot> slots_;
  uint32_t head_ = kNoSlot;
  uint32_t tail_ = kNoSlot;
};

}  // namespace coapgate::engine
