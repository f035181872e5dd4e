// ShardCounters: what one shard has seen and done, for the SIGUSR1 summary (and later the
// metrics endpoint), and two gauges: the exchange memory's effective horizons.
//
// Thread contract: written only by the owning shard's thread (a relaxed load + store, no
// read-modify-write, so no lock prefix on the data plane); read by any thread with relaxed
// loads, which may see a count a few increments old. Aligned to its own cache lines so that
// shards never share a line.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

namespace coapgate::engine {

enum class Counter : uint8_t {
  kReceived,            ///< datagrams read from the sockets
  kDropTooShort,        ///< < 4 bytes
  kDropBadVersion,      ///< Ver != 1
  kDropFormatError,     ///< RFC 7252 format error in a non-CON (a CON gets an RST)
  kDropStray,           ///< ACK/RST, reserved codes and responses in NON, Empty NON
  kDropTruncated,       ///< larger than the receive buffer (MSG_TRUNC)
  kDropPendingDuplicate,  ///< duplicate of a request still being processed: no answer yet
  kSendFailed,          ///< reply the kernel refused (ENOBUFS, EAGAIN, ...)
  kReset,               ///< RSTs sent (format errors in CON, pings, unsolicited responses)
  kReplyChanged,        ///< 2.04
  kReplyBadRequest,     ///< 4.00 bad topic
  kReplyUnauthorized,   ///< 4.01 unknown or inactive device
  kReplyOtherClientError,  ///< 4.02, 4.04, 4.05, 4.12, 4.13
  kReplyServiceUnavailable,  ///< 5.03, for any of the reasons below
  kReplyOtherServerError,  ///< 5.05
  kDuplicateReplayed,   ///< a cached response sent again
  kDedupFull,           ///< 5.03: the device's K exchanges all pending, or the table bound
  kDedupEvictedDeviceOverK,  ///< remembered exchanges dropped early: their device needed room
  kDedupEvictedTableBound,   ///< remembered exchanges dropped early with their device's record
  kInflightFull,        ///< 5.03: no free in-flight slot
  kQueueFull,           ///< 5.03: the publisher queue was full
  kBudgetExpired,       ///< 5.03: the sinks did not answer within coap.response_budget_ms
  kSinkRefused,         ///< 5.03: a sink reported failure
  kSinkDown,            ///< 5.03 at once: a sink is known down (circuit open)
  kDraining,            ///< 5.03: request during shutdown
  kBootstrap,           ///< GET /bootstrap handed to the bootstrap worker (it replies)
  kBootstrapQueueFull,  ///< 5.03: the bootstrap worker's queue was full
  kAccepted,            ///< messages handed to the sinks
  kSecureRecords,       ///< decrypted DTLS records handled as CoAP
  kSessionGone,         ///< a reply whose DTLS session ended before it was sent
  kLostAfterEnqueueAck,  ///< ack = "enqueue": 2.04 sent, then a sink failed the message
  kCount_,
};

[[nodiscard]] std::string_view ToString(Counter counter) noexcept;

class alignas(64) ShardCounters {
 public:
  void Add(Counter c, uint64_t n = 1) noexcept {
    auto& slot = values_[static_cast<size_t>(c)];
    slot.store(slot.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  [[nodiscard]] uint64_t Get(Counter c) const noexcept {
    return values_[static_cast<size_t>(c)].load(std::memory_order_relaxed);
  }
  // The exchange memory's effective horizon in seconds (ExchangeMemory::EffectiveHorizonS): over
  // both eviction causes, and over the table bound alone (below the lifetime only when the
  // table is too small for the fleet). Written once per loop turn.
  void SetHorizons(uint32_t any_cause_s, uint32_t table_bound_s) noexcept {
    horizon_s_.store(any_cause_s, std::memory_order_relaxed);
    table_bound_horizon_s_.store(table_bound_s, std::memory_order_relaxed);
  }
  [[nodiscard]] uint32_t horizon_s() const noexcept {
    return horizon_s_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] uint32_t table_bound_horizon_s() const noexcept {
    return table_bound_horizon_s_.load(std::memory_order_relaxed);
  }

 private:
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Counter::kCount_)> values_{};
  std::atomic<uint32_t> horizon_s_{UINT32_MAX};  ///< UINT32_MAX: no loop turn yet
  std::atomic<uint32_t> table_bound_horizon_s_{UINT32_MAX};
};

// "received=12 reply_changed=10 ..." over the sum of all shards, non-zero counters only, then
// the horizon gauges as their minimum over the shards ("dedup_horizon_s=247
// dedup_horizon_table_bound_s=247"; left out before any shard finished a loop turn).
template <class Range>
std::string SummarizeCounters(const Range& shards) {
  std::string out;
  for (size_t i = 0; i < static_cast<size_t>(Counter::kCount_); ++i) {
    uint64_t total = 0;
    for (const ShardCounters* s : shards) total += s->Get(static_cast<Counter>(i));
    if (total == 0) continue;
    if (!out.empty()) out += ' ';
    out += ToString(static_cast<Counter>(i));
    out += '=';
    out += std::to_string(total);
  }
  if (out.empty()) out = "nothing yet";
  uint32_t horizon = UINT32_MAX;
  uint32_t table_bound = UINT32_MAX;
  for (const ShardCounters* s : shards) {
    horizon = std::min(horizon, s->horizon_s());
    table_bound = std::min(table_bound, s->table_bound_horizon_s());
  }
  if (horizon != UINT32_MAX) {
    out += " dedup_horizon_s=" + std::to_string(horizon) +
           " dedup_horizon_table_bound_s=" + std::to_string(table_bound);
  }
  return out;
}

}  // namespace coapgate::engine
