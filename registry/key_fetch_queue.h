// KeyFetchQueue: the ICCIDs whose generated key a handshake missed, waiting for a database
// thread to fetch their rows (registry/postgres_key_store.h). It is how a key made on another
// node is accepted here at once, without waiting for that node's NOTIFY (or, when a NOTIFY was
// lost, for the next reconnect's reload): the handshake that missed fails, the row is fetched
// in the background, and the device's next attempt finds the key.
//
// Shards post with Post (a handshake's PSK callback); one consumer thread takes the batch with
// Take when wake_fd() is readable. Three bounds keep a flood of handshakes from becoming a
// flood of queries:
// - The caller posts only ICCIDs of the registry snapshot (active devices with no key of their
//   own); the DTLS cookie exchange before the PSK callback has proved the source address.
// - Per ICCID, at most one post per `cooldown_ms`: a fixed table of recent posts (indexed by a
//   hash of the ICCID, overwritten on collision, so at worst two ICCIDs sharing a slot are
//   posted a little more often) answers "just asked" without a query. This also deduplicates
//   an ICCID that is still pending.
// - At most kCapacity pending ICCIDs; further posts are dropped and counted (queue_full).
// The consumer fetches a whole batch with one query.
//
// Thread contract: Post from any number of threads at once (noexcept, no allocation; a mutex
// held for one table probe and a copy of at most kMaxIccidLength bytes, then one eventfd write
// when the batch went from empty to non-empty). Take and wake_fd from one consumer thread. The
// counters from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/limits.h"

namespace coapgate::registry {

class KeyFetchQueue {
 public:
  static constexpr size_t kCapacity = 64;       // pending ICCIDs, one query's worth
  static constexpr size_t kRecentSlots = 4096;  // the cooldown table; a power of two

  explicit KeyFetchQueue(uint64_t cooldown_ms);
  ~KeyFetchQueue();
  KeyFetchQueue(const KeyFetchQueue&) = delete;
  KeyFetchQueue& operator=(const KeyFetchQueue&) = delete;

  // Asks for `iccid`'s row at `now_ms` (monotonic). Ignored (counted suppressed) when the same
  // ICCID was posted less than cooldown_ms ago; dropped (counted queue_full) when kCapacity are
  // pending; an ICCID longer than kMaxIccidLength is ignored (no registry device has one).
  void Post(std::string_view iccid, uint64_t now_ms) noexcept;

  // Moves the pending ICCIDs into `out` (cleared first) and clears wake_fd(). Consumer only.
  void Take(std::vector<std::string>* out);

  // An eventfd, readable while ICCIDs are pending (poll it; Take clears it).
  [[nodiscard]] int wake_fd() const noexcept { return wake_fd_; }

  [[nodiscard]] uint64_t queued() const noexcept { return load(queued_); }
  [[nodiscard]] uint64_t suppressed() const noexcept { return load(suppressed_); }
  [[nodiscard]] uint64_t queue_full() const noexcept { return load(queue_full_); }

 private:
  struct Iccid {
    std::array<char, kMaxIccidLength> digits{};
    uint8_t length = 0;
    [[nodiscard]] std::string_view view() const noexcept { return {digits.data(), length}; }
  };
  struct Recent {
    Iccid iccid;
    uint64_t posted_ms = 0;
  };
  static uint64_t load(const std::atomic<uint64_t>& a) noexcept {
    return a.load(std::memory_order_relaxed);
  }

  const uint64_t cooldown_ms_;
  int wake_fd_ = -1;

  std::mutex mutex_;
  std::array<Iccid, kCapacity> pending_;         // guarded by mutex_
  size_t count_ = 0;                             // guarded by mutex_
  std::vector<Recent> recent_;                   // kRecentSlots, allocated once; mutex_

  std::atomic<uint64_t> queued_{0};
  std::atomic<uint64_t> suppressed_{0};
  std::atomic<uint64_t> queue_full_{0};
};

}  // namespace coapgate::registry
