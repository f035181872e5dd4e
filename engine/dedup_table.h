// DedupTable: a shard's memory of recent request exchanges (RFC 7252 §4.5, SPEC §4, I3), so
// that a retransmission is never forwarded twice and gets the identical response again, and a
// duplicate of an exchange that is still being processed gets no answer at all.
//
// Thread contract: owned by one shard and touched only by its thread; no locks, no atomics.
// Allocation: everything is allocated by the constructor; no member function allocates.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "codec/message.h"

namespace coapgate::engine {

// What makes two requests "the same message". Plain CoAP: peer = IpAddress::bytes(), port =
// the UDP source port. DTLS: a packed PSK identity in `peer` and port 0 (SPEC §4: the identity
// survives NAT rebinding; the address does not).
struct DedupKey {
  std::array<uint8_t, 16> peer;
  uint16_t port;
  uint16_t message_id;

  friend bool operator==(const DedupKey&, const DedupKey&) = default;
};

// A 64-bit hash of all 20 key bytes. `seed` makes the bucket layout unpredictable to remote
// peers, who choose the port, the MID and (IPv6) most of the address: with a fixed public
// hash they could precompute keys that share one probe chain. The mix is not a PRF; the seed
// raises the bar, the bounded table caps the damage.
[[nodiscard]] uint64_t HashDedupKey(const DedupKey& key, uint64_t seed) noexcept;

// Storage layout and policy:
//
// Entries live in a ring of `capacity` slots in arrival order; the oldest occupied slot is the
// head. An open-addressing index (a power of two >= 2 x capacity uint32 slot numbers, linear
// probing, backward-shift deletion, so no tombstones) maps a key to its slot. A removed entry
// (Forget, replaced after a token mismatch or expiry) only marks its ring slot free; the slot
// is reclaimed when it reaches the head (ExpireUntil, or the next insert at the bound). A
// replacement is always appended at the tail, so arrival order stays true and nothing leaks:
// every occupied ring slot is either live or on its way to the head.
//
// Lifetimes: an entry expires `con_lifetime_s` (EXCHANGE_LIFETIME) or `non_lifetime_s`
// (NON_LIFETIME) after Admit, whatever its state; completing it does not extend it. Expiry is
// checked on every lookup, so an expired entry is never answered from, even when ExpireUntil
// has not reached it yet (a NON entry queued behind a longer-lived CON entry): correctness
// never depends on the head being the first to expire, only reclamation speed does.
//
// Policy at the bound: when an insert finds all `capacity` ring slots occupied, it reclaims
// the head (the oldest entry) if that slot is free, expired, or done — a done entry is evicted
// early (`evictions`): its retransmissions, should any still come, will be forwarded again,
// which the idempotency key (SPEC §4) lets consumers drop. If the head is still pending, it is
// not evicted (its duplicates must stay unanswered and unforwarded) and the insert is refused
// with kFull (`full_refusals`): nothing is stored and the caller answers 5.03 + Max-Age. This
// costs O(1) per insert; an eviction may drop an entry younger than its lifetime, never a
// pending one. Refusal is conservative: a free slot queued behind a pending head is not
// used, and a replacement needs a fresh tail slot like any insert (at the bound it evicts the
// head or is refused, although its old slot will be reclaimed later). A pending head means
// the whole ring was filled within roughly one response budget, i.e. real overload.
//
// Invariants:
//   - used_ ring slots, starting at head_, are occupied; each is live (kPending or kDone) or
//     free (kFree, awaiting reclamation). All other ring slots are kFree. live_ <= used_.
//   - Every live entry has exactly one index position, reachable from its home bucket
//     (hash & index mask) without crossing an empty position; free entries have none.
//   - The index is at most half full (live_ <= capacity <= index_slots / 2), so every probe
//     ends at an empty position.
//   - A slot's generation is never 0 and changes whenever its entry is removed, so a Handle
//     names exactly one occupancy of one slot (until the uint32 wraps, 2^32 - 1 reuses of
//     that slot later).
//   - No two live entries have the same key.
//
// Review: SPEC sizing also suggests a per-peer cap (Californium: 64 entries per peer) as a
// second bound against one noisy peer filling the table; not implemented here.
class DedupTable {
 public:
  // SPEC §4: EXCHANGE_LIFETIME and NON_LIFETIME of RFC 7252 §4.8.2 with default parameters.
  static constexpr uint32_t kDefaultConLifetimeS = 247;
  static constexpr uint32_t kDefaultNonLifetimeS = 145;
  // Keeps the index (2 x capacity, rounded up to a power of two) addressable by the 32-bit
  // stored hash and slot numbers below kNoSlot. 2^30 entries would already be 56 GiB.
  static constexpr uint32_t kMaxCapacity = uint32_t{1} << 30;
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  struct Limits {
    uint32_t capacity;  ///< REQUIRES 1 <= capacity <= kMaxCapacity
    uint32_t con_lifetime_s = kDefaultConLifetimeS;  ///< REQUIRES 1 <= value < 2^31
    uint32_t non_lifetime_s = kDefaultNonLifetimeS;  ///< REQUIRES 1 <= value < 2^31
    uint64_t hash_seed = 0;  ///< production: a random value per shard (see HashDedupKey)
  };

  enum class State : uint8_t {
    kFree,     ///< no entry: never used, or removed and awaiting reclamation at the head
    kPending,  ///< admitted, no response yet: duplicates get no answer
    kDone,     ///< response recorded: duplicates get the identical response again
  };

  // One remembered exchange. 48 bytes; with its share of the index (4 bytes x index_slots /
  // capacity: 8 when capacity is a power of two, always < 16) it costs 56..63 bytes, within
  // SPEC §4's 64. The hash comes first so that hash, key and token (the bytes a probe compares)
  // share a cache line for three of every four slots.
  struct Entry {
    uint32_t hash;  ///< low 32 bits of HashDedupKey: home bucket and a cheap probe filter
    DedupKey key;
    std::array<std::byte, codec::kMaxTokenLength> token;  ///< first token_length bytes used
    uint8_t token_length;
    State state;
    // The cached response: with the request's token, enough to re-encode identical bytes.
    uint8_t response_code;
    uint8_t response_type;         ///< 2 = ACK (piggybacked), 1 = NON
    uint16_t response_message_id;  ///< for an ACK, the request's MID
    uint16_t max_age;              ///< 0 = no Max-Age option
    uint32_t expires_at;           ///< caller's monotonic seconds; expired once now >= this
    uint32_t generation;

    [[nodiscard]] std::span<const std::byte> token_bytes() const noexcept {
      return {token.data(), token_length};
    }
  };
  static_assert(sizeof(Entry) <= 48, "SPEC §4: <= 64 bytes per entry including the index");

  // Names one admitted exchange. Stays valid until that entry is removed (Forget, eviction,
  // expiry, replacement); after that every use fails safely. A value-initialised Handle{} is
  // kNoHandle, and generations are never 0, so {0, 0} never names an entry either.
  struct Handle {
    uint32_t slot = kNoSlot;
    uint32_t generation = 0;
  };
  static constexpr Handle kNoHandle{kNoSlot, 0};

  enum class Verdict : uint8_t {
    kNew,               ///< forward it; then Complete (or Forget) the handle
    kDuplicatePending,  ///< the first copy is still being processed: send nothing
    kDuplicateDone,     ///< resend the cached response in `entry`; do not forward
    kFull,              ///< nothing stored: answer 5.03 (policy at the bound)
  };

  // `entry` is the admitted (kNew) or matching (duplicate) entry, nullptr for kFull. It points
  // into the table and is valid until the next non-const call.
  struct Admission {
    Verdict verdict;
    Handle handle;
    const Entry* entry;
  };

  struct Stats {
    uint64_t hits_pending;      ///< kDuplicatePending verdicts
    uint64_t hits_done;         ///< kDuplicateDone verdicts
    uint64_t token_mismatches;  ///< live entry replaced: same key, other token (device reboot)
    uint64_t evictions;         ///< done entries dropped before their lifetime at the bound
    uint64_t full_refusals;     ///< kFull verdicts
    uint64_t expired;           ///< entries removed once their lifetime had passed (pending too)
  };

  // Allocates the ring and the index: the only allocation this type ever makes. Aborts with a
  // message if `limits` violates its REQUIRES (configuration is validated before this).
  explicit DedupTable(const Limits& limits);

  DedupTable(const DedupTable&) = delete;
  DedupTable& operator=(const DedupTable&) = delete;
  // A moved-from table may only be destroyed or assigned to.
  DedupTable(DedupTable&&) noexcept = default;
  DedupTable& operator=(DedupTable&&) noexcept = default;

  // Looks up `key`. Present, not expired and with the same token: kDuplicatePending or
  // kDuplicateDone (counted as hits). Absent, expired, or present with another token (counted
  // in token_mismatches; the old entry's handle goes stale even if it was pending): a fresh
  // kPending entry expiring at now_s + the CON or NON lifetime is appended and returned as
  // kNew. At the bound see "Policy at the bound": may evict the oldest entry, or refuse with
  // kFull and change nothing.
  // REQUIRES: token.size() <= codec::kMaxTokenLength (ParseMessage guarantees it; longer
  // tokens are compared and stored by their first 8 bytes). now_s never goes backwards.
  [[nodiscard]] Admission Admit(const DedupKey& key, std::span<const std::byte> token,
                                bool confirmable, uint32_t now_s) noexcept;

  // Records the response of a pending entry; its duplicates get it from now on. False, and
  // nothing changes, if the handle is stale or the entry is already done (a duplicate may have
  // received the first response: a second one must not replace it).
  bool Complete(Handle h, uint8_t response_code, uint8_t response_type,
                uint16_t response_message_id, uint16_t max_age) noexcept;

  // Abandons a pending entry without a response (the request was dropped), so that a
  // retransmission is admitted as new. No-op for a stale handle or a done entry: a completed
  // exchange's cached response is what its retransmissions must get.
  void Forget(Handle h) noexcept;

  // The entry `h` names, or nullptr if the handle is stale. Valid until the next non-const call.
  [[nodiscard]] const Entry* Get(Handle h) const noexcept;

  // Reclaims ring slots from the oldest end while the head is free or expired at now_s, at
  // most `max_entries` of them (one loop turn can then be bounded: everything admitted in one
  // second expires in the same second). Amortised O(1) per Admit; call once per loop turn.
  // Returns the number of ring slots reclaimed.
  size_t ExpireUntil(uint32_t now_s, size_t max_entries = SIZE_MAX) noexcept;

  [[nodiscard]] size_t size() const noexcept { return live_; }  ///< live entries
  [[nodiscard]] size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] size_t index_slots() const noexcept { return index_.size(); }
  // Heap bytes of the ring and the index (fixed at construction; excludes sizeof(*this)).
  [[nodiscard]] size_t MemoryBytes() const noexcept;
  [[nodiscard]] const Stats& stats() const noexcept { return stats_; }

  // Walks the whole ring and index and checks every invariant above; O(capacity + index).
  // For tests and debug assertions, not for the data plane.
  [[nodiscard]] bool CheckInvariants() const noexcept;

 private:
  static constexpr uint32_t kEmpty = UINT32_MAX;  // an empty index position

  struct Probe {
    size_t position;  // the key's index position if found, else the empty position reached
    bool found;
  };

  [[nodiscard]] Probe Find(const DedupKey& key, uint32_t hash) const noexcept;
  [[nodiscard]] size_t PositionOfSlot(uint32_t slot) const noexcept;
  [[nodiscard]] bool CanReclaimHead(uint32_t replaced_slot, uint32_t now_s) const noexcept;
  void EraseFromIndex(size_t position) noexcept;
  void Release(uint32_t slot) noexcept;
  void ReclaimHead(uint32_t now_s) noexcept;
  [[nodiscard]] Entry* LiveEntry(Handle h) noexcept;

  std::vector<Entry> ring_;       // capacity_ slots, never resized
  std::vector<uint32_t> index_;   // power-of-two size; slot numbers or kEmpty
  size_t index_mask_ = 0;
  uint32_t capacity_ = 0;
  uint32_t head_ = 0;             // oldest occupied ring slot (meaningful when used_ > 0)
  uint32_t used_ = 0;             // occupied ring slots: live + awaiting reclamation
  uint32_t live_ = 0;
  uint32_t con_lifetime_s_ = 0;
  uint32_t non_lifetime_s_ = 0;
  uint64_t hash_seed_ = 0;
  Stats stats_{};
};

}  // namespace coapgate::engine
