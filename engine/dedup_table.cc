#include "engine/dedup_table.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/hash.h"

namespace coapgate::engine {
namespace {

// Configuration errors surface before the data plane starts: stop with a message.
void CheckLimit(bool ok, const char* what) noexcept {
  if (ok) return;
  std::fprintf(stderr, "coapgate: DedupTable: %s\n", what);
  std::abort();
}

// Serial-number comparison (RFC 1982 style): right across the uint32 wrap of the caller's
// clock, as long as lifetimes stay below 2^31 s (the constructor enforces it).
bool Expired(const DedupTable::Entry& e, uint32_t now_s) noexcept {
  return static_cast<int32_t>(now_s - e.expires_at) >= 0;
}

bool SameToken(const DedupTable::Entry& e, std::span<const std::byte> token) noexcept {
  return e.token_length == token.size() &&
         (token.empty() || std::memcmp(e.token.data(), token.data(), token.size()) == 0);
}

}  // namespace

uint64_t HashDedupKey(const DedupKey& key, uint64_t seed) noexcept {
  // Three chained finalizer rounds over (peer high, peer low, port:mid). The seed enters
  // first, so which keys collide depends on it. For IPv4 (v4-mapped) the first word is a
  // constant; the address, port and MID carry all the entropy.
  uint64_t first;
  uint64_t second;
  std::memcpy(&first, key.peer.data(), 8);
  std::memcpy(&second, key.peer.data() + 8, 8);
  const uint64_t tail = (uint64_t{key.port} << 16) | key.message_id;
  uint64_t x = Mix64(first ^ seed);
  x = Mix64(x ^ second);
  return Mix64(x ^ tail);
}

DedupTable::DedupTable(const Limits& limits)
    : capacity_(limits.capacity),
      con_lifetime_s_(limits.con_lifetime_s),
      non_lifetime_s_(limits.non_lifetime_s),
      hash_seed_(limits.hash_seed) {
  CheckLimit(limits.capacity >= 1 && limits.capacity <= kMaxCapacity,
             "capacity must be in [1, 2^30]");
  constexpr uint32_t kMaxLifetime = uint32_t{1} << 31;
  CheckLimit(limits.con_lifetime_s >= 1 && limits.con_lifetime_s < kMaxLifetime,
             "con_lifetime_s must be in [1, 2^31)");
  CheckLimit(limits.non_lifetime_s >= 1 && limits.non_lifetime_s < kMaxLifetime,
             "non_lifetime_s must be in [1, 2^31)");
  Entry free{};
  free.state = State::kFree;
  free.generation = 1;  // 0 is left to Handle{}, which must never name an entry
  ring_.assign(capacity_, free);
  // At most half full: linear-probing chains stay short (expected ~1.5 probes per hit).
  index_.assign(std::bit_ceil(uint64_t{2} * capacity_), kEmpty);
  index_mask_ = index_.size() - 1;
}

DedupTable::Probe DedupTable::Find(const DedupKey& key, uint32_t hash) const noexcept {
  size_t position = hash & index_mask_;
  for (;;) {  // ends: the index is never more than half full
    const uint32_t slot = index_[position];
    if (slot == kEmpty) return {position, false};
    const Entry& e = ring_[slot];
    if (e.hash == hash && e.key == key) return {position, true};
    position = (position + 1) & index_mask_;
  }
}

size_t DedupTable::PositionOfSlot(uint32_t slot) const noexcept {
  size_t position = ring_[slot].hash & index_mask_;
  while (index_[position] != slot) {
    assert(index_[position] != kEmpty && "live entry missing from the index");
    position = (position + 1) & index_mask_;
  }
  return position;
}

void DedupTable::EraseFromIndex(size_t position) noexcept {
  // Backward-shift deletion: walk the run after the hole; an entry whose home bucket is not
  // inside (hole, next] may move back into the hole, which then moves to where it was. The run
  // stays unbroken for every remaining key, so no tombstones are needed and probe lengths do
  // not degrade with churn.
  size_t hole = position;
  size_t next = (hole + 1) & index_mask_;
  for (;;) {
    const uint32_t slot = index_[next];
    if (slot == kEmpty) break;
    const size_t home = ring_[slot].hash & index_mask_;
    if (((next - home) & index_mask_) >= ((next - hole) & index_mask_)) {
      index_[hole] = slot;
      hole = next;
    }
    next = (next + 1) & index_mask_;
  }
  index_[hole] = kEmpty;
}

void DedupTable::Release(uint32_t slot) noexcept {
  Entry& e = ring_[slot];
  assert(e.state != State::kFree);
  e.state = State::kFree;
  // Every outstanding Handle to this occupancy is now stale.
  if (++e.generation == 0) e.generation = 1;
  --live_;
}

bool DedupTable::CanReclaimHead(uint32_t replaced_slot, uint32_t now_s) const noexcept {
  const Entry& head = ring_[head_];
  return head.state != State::kPending || head_ == replaced_slot || Expired(head, now_s);
}

void DedupTable::ReclaimHead(uint32_t now_s) noexcept {
  Entry& head = ring_[head_];
  if (head.state != State::kFree) {
    assert(head.state == State::kDone || Expired(head, now_s));
    ++(Expired(head, now_s) ? stats_.expired : stats_.evictions);
    EraseFromIndex(PositionOfSlot(head_));
    Release(head_);
  }
  head_ = head_ + 1 == capacity_ ? 0 : head_ + 1;
  --used_;
}

DedupTable::Admission DedupTable::Admit(const DedupKey& key, std::span<const std::byte> token,
                                        bool confirmable, uint32_t now_s) noexcept {
  assert(token.size() <= codec::kMaxTokenLength);
  token = token.first(std::min(token.size(), codec::kMaxTokenLength));
  const auto hash = static_cast<uint32_t>(HashDedupKey(key, hash_seed_));
  Probe probe = Find(key, hash);

  uint32_t replaced = kNoSlot;
  bool replaced_expired = false;
  if (probe.found) {
    const uint32_t slot = index_[probe.position];
    const Entry& e = ring_[slot];
    replaced_expired = Expired(e, now_s);
    if (!replaced_expired && SameToken(e, token)) {
      const bool pending = e.state == State::kPending;
      ++(pending ? stats_.hits_pending : stats_.hits_done);
      return {pending ? Verdict::kDuplicatePending : Verdict::kDuplicateDone,
              {slot, e.generation}, &e};
    }
    replaced = slot;
  }

  // Decide before changing anything, so that kFull leaves the table exactly as it was.
  if (used_ == capacity_ && !CanReclaimHead(replaced, now_s)) {
    ++stats_.full_refusals;
    return {Verdict::kFull, kNoHandle, nullptr};
  }
  bool index_changed = false;
  if (replaced != kNoSlot) {
    // Removed here and appended below rather than rewritten in place: arrival order (and
    // with it the head's role as the oldest entry) stays true. Its ring slot is reclaimed
    // when it reaches the head.
    ++(replaced_expired ? stats_.expired : stats_.token_mismatches);
    EraseFromIndex(probe.position);
    Release(replaced);
    index_changed = true;
  }
  if (used_ == capacity_) {
    index_changed |= ring_[head_].state != State::kFree;
    ReclaimHead(now_s);
  }
  // A deletion may have opened an earlier empty position on this key's chain; inserting
  // past it would make the key unreachable.
  if (index_changed) probe = Find(key, hash);

  uint32_t slot = head_ + used_;
  if (slot >= capacity_) slot -= capacity_;
  ++used_;
  ++live_;
  Entry& e = ring_[slot];
  assert(e.state == State::kFree);
  e.hash = hash;
  e.key = key;
  e.token = {};
  if (!token.empty()) std::memcpy(e.token.data(), token.data(), token.size());
  e.token_length = static_cast<uint8_t>(token.size());
  e.state = State::kPending;
  e.response_code = 0;
  e.response_type = 0;
  e.response_message_id = 0;
  e.max_age = 0;
  e.expires_at = now_s + (confirmable ? con_lifetime_s_ : non_lifetime_s_);
  index_[probe.position] = slot;
  return {Verdict::kNew, {slot, e.generation}, &e};
}

const DedupTable::Entry* DedupTable::Get(Handle h) const noexcept {
  if (h.slot >= capacity_) return nullptr;
  const Entry& e = ring_[h.slot];
  if (e.generation != h.generation || e.state == State::kFree) return nullptr;
  return &e;
}

DedupTable::Entry* DedupTable::LiveEntry(Handle h) noexcept {
  return Get(h) == nullptr ? nullptr : &ring_[h.slot];
}

bool DedupTable::Complete(Handle h, uint8_t response_code, uint8_t response_type,
                          uint16_t response_message_id, uint16_t max_age) noexcept {
  Entry* e = LiveEntry(h);
  if (e == nullptr || e->state != State::kPending) return false;
  e->response_code = response_code;
  e->response_type = response_type;
  e->response_message_id = response_message_id;
  e->max_age = max_age;
  e->state = State::kDone;
  return true;
}

void DedupTable::Forget(Handle h) noexcept {
  const Entry* e = LiveEntry(h);
  if (e == nullptr || e->state != State::kPending) return;
  EraseFromIndex(PositionOfSlot(h.slot));
  Release(h.slot);
}

size_t DedupTable::ExpireUntil(uint32_t now_s, size_t max_entries) noexcept {
  size_t reclaimed = 0;
  while (reclaimed < max_entries && used_ > 0) {
    const Entry& head = ring_[head_];
    // A pending head that has outlived its lifetime goes too: its owner's handle turns
    // stale and Complete reports it; the owner still sends its response.
    if (head.state != State::kFree && !Expired(head, now_s)) break;
    ReclaimHead(now_s);
    ++reclaimed;
  }
  return reclaimed;
}

size_t DedupTable::MemoryBytes() const noexcept {
  return ring_.capacity() * sizeof(Entry) + index_.capacity() * sizeof(uint32_t);
}

bool DedupTable::CheckInvariants() const noexcept {
  if (ring_.size() != capacity_ || used_ > capacity_ || live_ > used_) return false;
  if (!std::has_single_bit(index_.size()) || index_.size() < uint64_t{2} * capacity_) {
    return false;
  }
  // Ring: occupied slots [head_, head_ + used_) hold live or free entries; the rest are free.
  size_t live = 0;
  for (uint32_t i = 0; i < capacity_; ++i) {
    const uint32_t age = i >= head_ ? i - head_ : i + capacity_ - head_;
    const State state = ring_[i].state;
    if (state != State::kFree) {
      if (age >= used_) return false;
      ++live;
    }
  }
  if (live != live_) return false;
  // Index: one position per live entry, each reachable from its home without an empty gap,
  // and each key's first match is its own slot (so no key is live twice).
  size_t indexed = 0;
  for (size_t position = 0; position < index_.size(); ++position) {
    const uint32_t slot = index_[position];
    if (slot == kEmpty) continue;
    ++indexed;
    if (slot >= capacity_) return false;
    const Entry& e = ring_[slot];
    if (e.state == State::kFree || e.generation == 0) return false;
    if (e.hash != static_cast<uint32_t>(HashDedupKey(e.key, hash_seed_))) return false;
    for (size_t p = e.hash & index_mask_; p != position; p = (p + 1) & index_mask_) {
      if (index_[p] == kEmpty) return false;
    }
    const Probe probe = Find(e.key, e.hash);
    if (!probe.found || probe.position != position) return false;
  }
  return indexed == live_;
}

}  // namespace coapgate::engine
