// ExchangeMemory: a shard's memory of recent request exchanges, bounded by devices, not by
// request rate (issue #12). It remembers, per device, its last K exchanges for their whole
// lifetime (EXCHANGE_LIFETIME / NON_LIFETIME, RFC 7252 §4.8.2), so that a retransmission is
// never forwarded twice and gets the identical response again at any load; a duplicate of an
// exchange still being processed gets no answer at all. Same shape as DedupTable, which it
// replaces: that one is a global ring whose horizon is capacity / request rate (~2 s at 140k
// req/s), so one busy minute erased every device's memory.
//
// Thread contract: owned by one shard and touched only by its thread; no locks, no atomics.
// Allocation: everything is allocated by the constructor; no member function allocates.
// Caller contract: the shard calls Admit only for a known, active device and a valid topic
// (after the registry and topic checks), so unknown devices and bad requests never get a
// record; `devices` is sized from the registry, and the table bound below is the fallback for a
// registry larger than the budget, not the normal path.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "codec/message.h"

namespace coapgate::engine {

// Who the exchanges belong to. The UDP port is deliberately not part of it: a device behind a
// NAT that rebinds keeps its exchanges (the shard steers by source address, so all of a
// device's datagrams reach one shard).
struct DeviceKey {
  static constexpr uint8_t kPlain = 0;  ///< bytes = IpAddress::bytes() (IPv6 or v4-mapped)
  static constexpr uint8_t kDtls = 1;   ///< bytes = DeviceKeyForIdentity's digest

  std::array<uint8_t, 16> bytes;
  uint8_t kind;

  friend bool operator==(const DeviceKey&, const DeviceKey&) = default;
};

// A plain-CoAP device: its source address as IpAddress::bytes() gives it.
[[nodiscard]] inline DeviceKey DeviceKeyForAddress(
    const std::array<uint8_t, 16>& address) noexcept {
  return DeviceKey{address, DeviceKey::kPlain};
}

// A DTLS device: the canonical (big-endian) XXH3-128 of its PSK identity, unseeded, so that the
// key is the same in every process and across libxxhash upgrades (XXH3 output is frozen since
// 0.8.0): a later issue hands entries over to a successor process. Not a secret and not a PRF;
// the index hash (HashDeviceKey) is what the per-shard seed protects.
[[nodiscard]] DeviceKey DeviceKeyForIdentity(std::string_view psk_identity) noexcept;

// The index hash of a key: three Mix64 rounds over (bytes high, bytes low, kind), seed first,
// so which keys share a probe chain depends on the per-shard seed (see HashDedupKey).
[[nodiscard]] uint64_t HashDeviceKey(const DeviceKey& key, uint64_t seed) noexcept;

// Storage layout:
//
// One array of 22-byte slots: record r (key, last activity, counts) at slot r x (K + 1), its K
// entries right after it, so a lookup reads one run of memory. An open-addressing index (a
// power of two >= 2 x devices uint32 positions, linear probing, backward-shift deletion, no
// tombstones) maps a DeviceKey to its record. An index position holds the record number (24
// bits) and 8 more bits of the hash, which filter probes without touching records. At K = 4 a
// device costs 5 x 22 + (8..16 for the index) < 128 bytes: 118.4 bytes at 1,000,000 devices.
// Within a record, entries are found by MID with a linear scan of K <= 16 entries.
//
// Lifetimes: an entry expires `con_lifetime_s` or `non_lifetime_s` after Admit, whatever its
// state; completing it does not extend it. Expiry is checked on every lookup, so an expired
// entry is never answered from; reclaiming it is lazy (the next Admit that needs its slot, or
// Sweep). A pending entry expires too (its owner's handle goes stale; Complete reports it).
//
// Policy, per device (the normal bound): a new MID takes a free entry, else an expired one,
// else the device's own oldest done entry (`evicted_device_over_k`, an early eviction: its
// retransmissions would be forwarded again, which the idempotency key of docs/delivery.md lets consumers
// drop). If all K entries are pending and alive, it is refused with kFull and nothing changes:
// a device with K exchanges in flight is beyond NSTART by a factor of K. No other device is
// ever touched, so a flood of other devices cannot shorten anyone's memory.
//
// Policy, table bound (the fallback): a new device takes a free record (never used, or
// reclaimed by Sweep). With none left, Admit examines the next kEvictionScan records at a
// clock hand: the first whose entries are all free or expired is reclaimed (`records_reclaimed`,
// no early eviction); otherwise the least recently active record of those scanned that has no
// live pending entry is evicted (its live entries count in `evicted_table_bound`). Records with a
// live pending entry are skipped; if every scanned record has one, kFull and nothing stored.
// This is a sampled LRU, O(kEvictionScan) per insert at the bound: exact when devices <=
// kEvictionScan, otherwise the victim is the least recently active of a window that sweeps the
// whole table in devices / kEvictionScan evictions.
//
// Visibility: every early eviction is counted by cause and updates that cause's gauge of the
// effective horizon, the age of the youngest entry evicted before its lifetime
// (EffectiveHorizonS); it reads the lifetime when nothing was evicted early in the last one or
// two kHorizonWindowS windows.
//
// Invariants:
//   - A record is in use (kind != kUnused) iff it has exactly one index position; it is then
//     reachable from its home bucket (hash & index mask) without crossing an empty position,
//     and the position's tag is the hash's top 8 bits. No two records in use have the same key.
//   - Slot r x (K + 1) is record r, the K slots after it are its entries; never otherwise.
//   - Records >= fresh_ were never used; unused records below fresh_ are exactly the free list.
//     Entries of a record not in use are all kFree.
//   - A record's `live` and `pending` count its kFree-less and kPending entries; no two non-free
//     entries of one record have the same MID. live_ is the sum of `live` over all records.
//   - The index is at most half full (in-use records <= devices <= index positions / 2), so
//     every probe ends at an empty position.
//   - An entry's generation is in [1, 2^15) and changes whenever the entry is removed, so a
//     Handle names one occupancy of one entry until that entry has been reused 2^15 - 1 times.
//     Entries are reused only by their own device, whose pending entries are never evicted, and
//     by a new device after a table-bound eviction, so a handle held across a wrap would take
//     32767 replacements of that device's exchanges while its request is in flight.
class ExchangeMemory {
 public:
  // docs/delivery.md: EXCHANGE_LIFETIME and NON_LIFETIME of RFC 7252 §4.8.2 with default parameters.
  static constexpr uint32_t kDefaultConLifetimeS = 247;
  static constexpr uint32_t kDefaultNonLifetimeS = 145;
  // NSTART = 1 clients retransmit only their latest exchange; 4 also covers a few NONs sent
  // back to back and the exchange before a reboot. 128 bytes per device at this value.
  static constexpr uint32_t kDefaultPerDevice = 4;
  // The per-record MID scan stays within 6 cache lines; more would mean a client far beyond
  // NSTART, which the per-device bound is there to cap.
  static constexpr uint32_t kMaxPerDevice = 16;
  // An index position keeps 24 bits for the record number (8 for a hash tag); 0xffffff is left
  // unused so that no position equals kEmpty. 2^24 devices would already be 2 GiB per shard.
  static constexpr uint32_t kMaxDevices = (uint32_t{1} << 24) - 1;
  // Records examined per insert at the table bound: bounds the worst case of Admit (each one
  // may mean K entries read) while giving the LRU choice a useful sample.
  static constexpr uint32_t kEvictionScan = 16;
  // The effective-horizon gauge covers the current and the previous window: long enough to be
  // scraped by a 15-30 s metrics interval, short enough to recover soon after a burst.
  static constexpr uint32_t kHorizonWindowS = 60;
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  struct Limits {
    uint32_t devices;                             ///< records; REQUIRES 1 <= devices <= kMaxDevices
    uint32_t per_device = kDefaultPerDevice;      ///< K; REQUIRES 1 <= K <= kMaxPerDevice
    uint32_t con_lifetime_s = kDefaultConLifetimeS;  ///< REQUIRES 1 <= value < 2^31
    uint32_t non_lifetime_s = kDefaultNonLifetimeS;  ///< REQUIRES 1 <= value <= con_lifetime_s
    uint64_t hash_seed = 0;  ///< production: a random value per shard (see HashDeviceKey)
  };

  enum class State : uint8_t {
    kFree,     ///< no entry
    kPending,  ///< admitted, no response yet: duplicates get no answer
    kDone,     ///< response recorded: duplicates get the identical response again
  };

  // One remembered exchange: 22 bytes, 2-byte aligned (the expiry is stored as two halves so
  // that no 4-byte field pads it to 24: that padding alone would cost 8 bytes per device at K=4).
  class Entry {
   public:
    [[nodiscard]] State state() const noexcept { return static_cast<State>(state_); }
    [[nodiscard]] uint16_t message_id() const noexcept { return message_id_; }
    [[nodiscard]] bool confirmable() const noexcept { return confirmable_ != 0; }
    [[nodiscard]] std::span<const std::byte> token_bytes() const noexcept {
      return {token_.data(), token_length_};
    }
    // The cached response: with the request's token, enough to re-encode identical bytes.
    [[nodiscard]] uint8_t response_code() const noexcept { return response_code_; }
    // 2 = ACK (piggybacked), 1 = NON.
    [[nodiscard]] uint8_t response_type() const noexcept { return response_type_; }
    [[nodiscard]] uint16_t response_message_id() const noexcept { return response_message_id_; }
    [[nodiscard]] uint16_t max_age() const noexcept { return max_age_; }  ///< 0 = no Max-Age
    // Caller's monotonic seconds; expired once now >= this (serial arithmetic).
    [[nodiscard]] uint32_t expires_at() const noexcept {
      return (uint32_t{expires_high_} << 16) | expires_low_;
    }

   private:
    friend class ExchangeMemory;
    std::array<std::byte, codec::kMaxTokenLength> token_;  ///< first token_length_ bytes used
    uint16_t message_id_;
    uint16_t response_message_id_;
    uint16_t max_age_;
    uint16_t expires_low_;
    uint16_t expires_high_;
    uint16_t generation_ : 15;
    uint16_t confirmable_ : 1;
    uint8_t response_code_;
    uint8_t token_length_ : 4;
    uint8_t state_ : 2;
    uint8_t response_type_ : 2;
  };
  static_assert(sizeof(Entry) == 22 && alignof(Entry) == 2);

  // Names one admitted exchange. Stays valid until that entry is removed (Forget, eviction,
  // expiry, replacement); after that every use fails safely. Handle{} is kNoHandle, and
  // generations are never 0, so {0, 0} never names an entry either.
  struct Handle {
    uint32_t slot = kNoSlot;  ///< record * (K + 1) + 1 + entry
    uint16_t generation = 0;
  };
  static constexpr Handle kNoHandle{kNoSlot, 0};

  enum class Verdict : uint8_t {
    kNew,               ///< forward it; then Complete (or Forget) the handle
    kDuplicatePending,  ///< the first copy is still being processed: send nothing
    kDuplicateDone,     ///< resend the cached response in `entry`; do not forward
    kFull,              ///< nothing stored: answer 5.03 (all K pending, or the table bound)
  };

  // `entry` is the admitted (kNew) or matching (duplicate) entry, nullptr for kFull. It points
  // into the table and is valid until the next non-const call.
  struct Admission {
    Verdict verdict;
    Handle handle;
    const Entry* entry;
  };

  struct Stats {
    uint64_t hits_pending;           ///< kDuplicatePending verdicts
    uint64_t hits_done;              ///< kDuplicateDone verdicts
    uint64_t token_mismatches;       ///< live entry replaced: same MID, other token (reboot)
    uint64_t evicted_device_over_k;  ///< done entries dropped early: their device needed a slot
    uint64_t evicted_table_bound;    ///< live entries dropped early with their device's record
    uint64_t full_refusals;          ///< kFull verdicts
    uint64_t expired;                ///< entries removed once their lifetime had passed
    uint64_t records_reclaimed;      ///< records freed or reused with nothing alive in them
  };

  // Allocates the records, entries and index: the only allocation this type ever makes. Aborts
  // with a message if `limits` violates its REQUIRES (configuration is validated before this).
  explicit ExchangeMemory(const Limits& limits);

  ExchangeMemory(const ExchangeMemory&) = delete;
  ExchangeMemory& operator=(const ExchangeMemory&) = delete;
  // A moved-from table may only be destroyed or assigned to.
  ExchangeMemory(ExchangeMemory&&) noexcept = default;
  ExchangeMemory& operator=(ExchangeMemory&&) noexcept = default;

  // Looks up (device, MID). Present, alive and with the same token: kDuplicatePending or
  // kDuplicateDone. Absent, expired, or present with another token (token_mismatches; the old
  // entry's handle goes stale even if it was pending): a fresh kPending entry expiring at
  // now_s + the CON or NON lifetime is stored and returned as kNew, possibly after an early
  // eviction (see the policies above); or kFull, and then nothing changed but the clock hand.
  // Any verdict but kFull marks the device active at now_s.
  // REQUIRES: device.kind is kPlain or kDtls (anything else is refused with kFull: a record
  // keeps the kind in 2 bits). token.size() <= codec::kMaxTokenLength (ParseMessage guarantees
  // it; longer tokens are compared and stored by their first 8 bytes). now_s never goes
  // backwards.
  [[nodiscard]] Admission Admit(const DeviceKey& device, uint16_t message_id,
                                std::span<const std::byte> token, bool confirmable,
                                uint32_t now_s) noexcept;

  // Records the response of a pending entry; its duplicates get it from now on. False, and
  // nothing changes, if the handle is stale or the entry is already done (a duplicate may have
  // received the first response: a second one must not replace it).
  bool Complete(Handle h, uint8_t response_code, uint8_t response_type,
                uint16_t response_message_id, uint16_t max_age) noexcept;

  // Abandons a pending entry without a response (the request was dropped), so that a
  // retransmission is admitted as new. No-op for a stale handle or a done entry.
  void Forget(Handle h) noexcept;

  // The entry `h` names, or nullptr if the handle is stale. Valid until the next non-const call.
  [[nodiscard]] const Entry* Get(Handle h) const noexcept;

  // The device's non-free entry for `message_id` (possibly expired but not yet reclaimed), or
  // nullptr; changes nothing. For diagnostics and tests. Valid until the next non-const call.
  [[nodiscard]] const Entry* Find(const DeviceKey& device, uint16_t message_id) const noexcept;

  // An answered exchange as the restart state carries it (engine/restart_state.h). Its
  // lifetime is relative (what was left of it when saved), so that the clocks of the two
  // processes never meet.
  struct SavedExchange {
    DeviceKey device;
    uint16_t message_id;
    bool confirmable;
    uint8_t token_length;                                 ///< <= codec::kMaxTokenLength
    std::array<std::byte, codec::kMaxTokenLength> token;  ///< first token_length bytes used
    uint8_t response_code;
    uint8_t response_type;
    uint16_t response_message_id;
    uint16_t max_age;
    uint32_t remaining_s;  ///< >= 1: lifetime left
  };

  // Visits every done entry still alive at now_s (pending ones are not: their request was
  // never answered, so a retransmission must be admitted again). Control plane: the owner's
  // thread, or while nobody runs the table.
  void ForEachDone(uint32_t now_s, const std::function<void(const SavedExchange&)>& visit) const;
  // Stores `saved` as a done entry expiring at now_s + remaining_s (capped at its lifetime):
  // from now on a retransmission gets the saved response. False, and nothing stored, if the
  // exchange is already known, the table is full (the same policies as Admit, which it uses),
  // or `saved` is not valid (kind, token length, remaining_s 0). Same thread contract.
  bool Restore(const SavedExchange& saved, uint32_t now_s) noexcept;

  // Examines up to `max_records` records at the sweep cursor (at most one full turn): removes
  // their expired entries and frees records left empty for new devices. Call once per loop turn
  // with a small budget; the data plane never depends on it (expiry is checked on lookup, and
  // the table bound reclaims expired records itself). Returns the number of records freed.
  size_t Sweep(uint32_t now_s, size_t max_records = SIZE_MAX) noexcept;

  // Why an entry was dropped before its lifetime.
  enum class EvictionCause : uint8_t {
    kDeviceOverK,  ///< its device needed a slot: harmless for clients within NSTART <= K
    kTableBound,   ///< its device's record went to another device: the promise is broken
  };

  // The effective horizon: the age in seconds of the youngest entry evicted before its lifetime
  // during the current or the previous kHorizonWindowS window of now_s, at most con_lifetime_s;
  // con_lifetime_s when there was none. The first overload takes both causes (as issue #12
  // defines it); the second one cause. Note that a device reporting every 30 s with K = 4
  // evicts its own entries at ~120 s of age in normal operation, so the kTableBound gauge is
  // the one that says whether the promise holds for every device.
  [[nodiscard]] uint32_t EffectiveHorizonS(uint32_t now_s) const noexcept;
  [[nodiscard]] uint32_t EffectiveHorizonS(uint32_t now_s, EvictionCause cause) const noexcept;

  [[nodiscard]] size_t size() const noexcept { return live_; }  ///< non-free entries
  [[nodiscard]] size_t devices_in_use() const noexcept { return in_use_; }
  [[nodiscard]] size_t device_capacity() const noexcept { return devices_; }
  [[nodiscard]] size_t per_device() const noexcept { return per_device_; }
  [[nodiscard]] size_t index_slots() const noexcept { return index_.size(); }
  // Heap bytes of records, entries and index (fixed at construction; excludes sizeof(*this)).
  [[nodiscard]] size_t MemoryBytes() const noexcept;
  [[nodiscard]] const Stats& stats() const noexcept { return stats_; }

  // Walks every record, entry and index position and checks every invariant above;
  // O(devices x K + index). For tests and debug assertions, not for the data plane.
  [[nodiscard]] bool CheckInvariants() const noexcept;

 private:
  static constexpr uint32_t kEmpty = UINT32_MAX;     // an empty index position
  static constexpr uint32_t kNoRecord = UINT32_MAX;  // ends the free list
  static constexpr uint8_t kUnused = 3;              // Record::kind of a record not in use
  static constexpr uint32_t kNoAge = UINT32_MAX;     // horizon gauge: no early eviction seen

  // A device: 22 bytes, the size of an Entry, so that a record and its K entries are one run of
  // K + 1 slots (one or two cache lines at K = 4, where separate arrays cost one more miss per
  // request). The counts let the table-bound scan skip and judge records without reading their
  // entries in the common cases.
  struct Record {
    std::array<uint8_t, 16> key;
    uint16_t last_active_low;   ///< in use: last Admit not refused; unused: next free record
    uint16_t last_active_high;
    uint16_t kind : 2;          ///< DeviceKey::kind, or kUnused
    uint16_t live : 5;          ///< non-free entries
    uint16_t pending : 5;       ///< kPending entries, alive or expired
    uint16_t reserved : 4;

    [[nodiscard]] uint32_t last_active_s() const noexcept {
      return (uint32_t{last_active_high} << 16) | last_active_low;
    }
    void set_last_active_s(uint32_t s) noexcept {
      last_active_low = static_cast<uint16_t>(s);
      last_active_high = static_cast<uint16_t>(s >> 16);
    }
  };
  // Slot r * (K + 1) holds record r (always as `record`); the K slots after it its entries
  // (always as `entry`): the active member of a slot never changes after construction.
  union Slot {
    Record record;
    Entry entry;
  };
  static_assert(sizeof(Record) == sizeof(Entry) && sizeof(Slot) == 22 && alignof(Slot) == 2);
  // Issue #12's budget: <= 128 bytes per device at K = 4 including the index (< 16 per record).
  static_assert(5 * sizeof(Slot) + 16 <= 128);

  // The youngest early-eviction age seen in window `window` (of kHorizonWindowS) and the one
  // before it.
  struct HorizonGauge {
    uint32_t window = 0;
    uint32_t current = kNoAge;
    uint32_t previous = kNoAge;

    void Note(uint32_t age_s, uint32_t now_s) noexcept;
    [[nodiscard]] uint32_t Youngest(uint32_t now_s) const noexcept;
  };

  struct Probe {
    size_t position;  // the key's index position if found, else the empty position reached
    bool found;
  };
  struct Inspection {
    bool all_expired;   // every entry free or expired: nothing to lose
    bool live_pending;  // an alive kPending entry: never evicted
  };

  [[nodiscard]] Probe FindRecord(const DeviceKey& key, uint64_t hash) const noexcept;
  [[nodiscard]] bool Matches(uint32_t record, const DeviceKey& key) const noexcept;
  [[nodiscard]] uint64_t HashOfRecord(uint32_t record) const noexcept;
  [[nodiscard]] size_t PositionOfRecord(uint32_t record) const noexcept;
  [[nodiscard]] Record& RecordAt(uint32_t record) noexcept {
    return slots_[size_t{record} * stride_].record;
  }
  [[nodiscard]] const Record& RecordAt(uint32_t record) const noexcept {
    return slots_[size_t{record} * stride_].record;
  }
  [[nodiscard]] Entry& EntryAt(uint32_t record, uint32_t i) noexcept {
    return slots_[size_t{record} * stride_ + 1 + i].entry;
  }
  [[nodiscard]] const Entry& EntryAt(uint32_t record, uint32_t i) const noexcept {
    return slots_[size_t{record} * stride_ + 1 + i].entry;
  }
  [[nodiscard]] uint32_t SlotOf(uint32_t record, uint32_t i) const noexcept {
    return record * stride_ + 1 + i;
  }
  [[nodiscard]] uint32_t AdmittedAt(const Entry& e) const noexcept;
  [[nodiscard]] Inspection Inspect(uint32_t record, uint32_t now_s) const noexcept;
  [[nodiscard]] uint32_t AcquireRecord(uint32_t now_s) noexcept;
  [[nodiscard]] Admission AdmitKnown(uint32_t record, uint16_t message_id,
                                     std::span<const std::byte> token, bool confirmable,
                                     uint32_t now_s) noexcept;
  Admission Store(uint32_t record, uint32_t index, uint16_t message_id,
                  std::span<const std::byte> token, bool confirmable, uint32_t now_s) noexcept;
  void EraseFromIndex(size_t position) noexcept;
  void ReleaseEntry(Record& record, Entry& e) noexcept;
  void DropEarly(Record& record, Entry& e, uint32_t now_s, EvictionCause cause) noexcept;
  void ReleaseRecord(uint32_t record, uint32_t now_s) noexcept;
  [[nodiscard]] Entry* LiveEntry(Handle h) noexcept;

  std::vector<Slot> slots_;       // devices_ x stride_ slots, never resized
  std::vector<uint32_t> index_;   // power-of-two size; (tag << 24 | record) or kEmpty
  size_t index_mask_ = 0;
  uint32_t devices_ = 0;
  uint32_t per_device_ = 0;
  uint32_t stride_ = 0;           // per_device_ + 1: a record and its entries
  uint32_t fresh_ = 0;            // records [fresh_, devices_) were never used
  uint32_t free_head_ = kNoRecord;
  uint32_t hand_ = 0;             // table-bound clock hand
  uint32_t sweep_ = 0;            // Sweep's cursor
  uint32_t in_use_ = 0;
  uint32_t live_ = 0;
  uint32_t con_lifetime_s_ = 0;
  uint32_t non_lifetime_s_ = 0;
  uint64_t hash_seed_ = 0;
  std::array<HorizonGauge, 2> horizon_{};  // by EvictionCause
  Stats stats_{};
};

}  // namespace coapgate::engine
