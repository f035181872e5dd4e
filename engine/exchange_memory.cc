#include "engine/exchange_memory.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/check.h"
#include "common/hash.h"

namespace coapgate::engine {
namespace {

constexpr uint32_t kRecordBits = 24;
constexpr uint32_t kRecordMask = (uint32_t{1} << kRecordBits) - 1;
constexpr uint16_t kMaxGeneration = (1u << 15) - 1;

// Serial-number comparisons (RFC 1982 style): right across the uint32 wrap of the caller's
// clock, as long as lifetimes stay below 2^31 s (the constructor enforces it).
bool Expired(uint32_t expires_at, uint32_t now_s) noexcept {
  return static_cast<int32_t>(now_s - expires_at) >= 0;
}
bool Before(uint32_t a, uint32_t b) noexcept { return static_cast<int32_t>(a - b) < 0; }

uint32_t Tag(uint64_t hash) noexcept { return static_cast<uint32_t>(hash >> 56); }

}  // namespace

DeviceKey DeviceKeyForIdentity(std::string_view psk_identity) noexcept {
  const XXH128_hash_t hash = XXH3_128bits(psk_identity.data(), psk_identity.size());
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, hash);
  DeviceKey key{};
  static_assert(sizeof(canonical.digest) == sizeof(key.bytes));
  std::memcpy(key.bytes.data(), canonical.digest, sizeof(key.bytes));
  key.kind = DeviceKey::kDtls;
  return key;
}

uint64_t HashDeviceKey(const DeviceKey& key, uint64_t seed) noexcept {
  uint64_t first;
  uint64_t second;
  std::memcpy(&first, key.bytes.data(), 8);
  std::memcpy(&second, key.bytes.data() + 8, 8);
  uint64_t x = Mix64(first ^ seed);
  x = Mix64(x ^ second);
  return Mix64(x ^ key.kind);
}

ExchangeMemory::ExchangeMemory(const Limits& limits)
    : devices_(limits.devices),
      per_device_(limits.per_device),
      stride_(limits.per_device + 1),
      con_lifetime_s_(limits.con_lifetime_s),
      non_lifetime_s_(limits.non_lifetime_s),
      hash_seed_(limits.hash_seed) {
  CHECK(limits.devices >= 1 && limits.devices <= kMaxDevices,
        "devices must be in [1, 2^24 - 1]");
  CHECK(limits.per_device >= 1 && limits.per_device <= kMaxPerDevice,
        "per_device must be in [1, 16]");
  constexpr uint32_t kMaxLifetime = uint32_t{1} << 31;
  CHECK(limits.con_lifetime_s >= 1 && limits.con_lifetime_s < kMaxLifetime,
        "con_lifetime_s must be in [1, 2^31)");
  CHECK(limits.non_lifetime_s >= 1 && limits.non_lifetime_s <= limits.con_lifetime_s,
        "non_lifetime_s must be in [1, con_lifetime_s]");
  Record unused{};
  unused.kind = kUnused;
  unused.set_last_active_s(kNoRecord);
  Entry free{};
  free.state_ = static_cast<uint8_t>(State::kFree);
  free.generation_ = 1;  // 0 is left to Handle{}, which must never name an entry
  slots_.resize(size_t{devices_} * stride_);
  for (uint32_t record = 0; record < devices_; ++record) {
    slots_[size_t{record} * stride_].record = unused;  // the members stay active for good
    for (uint32_t i = 0; i < per_device_; ++i) EntryAt(record, i) = free;
  }
  // At most half full: linear-probing chains stay short (expected ~1.5 probes per hit), and
  // the tags spare most record reads on the way.
  index_.assign(std::bit_ceil(uint64_t{2} * devices_), kEmpty);
  index_mask_ = index_.size() - 1;
}

// ---- Index ---------------------------------------------------------------------------------

bool ExchangeMemory::Matches(uint32_t record, const DeviceKey& key) const noexcept {
  const Record& r = RecordAt(record);
  return r.kind == key.kind && r.key == key.bytes;
}

uint64_t ExchangeMemory::HashOfRecord(uint32_t record) const noexcept {
  const Record& r = RecordAt(record);
  return HashDeviceKey(DeviceKey{r.key, static_cast<uint8_t>(r.kind)}, hash_seed_);
}

ExchangeMemory::Probe ExchangeMemory::FindRecord(const DeviceKey& key,
                                                 uint64_t hash) const noexcept {
  const uint32_t tag = Tag(hash);
  size_t position = hash & index_mask_;
  for (;;) {  // ends: the index is never more than half full
    const uint32_t value = index_[position];
    if (value == kEmpty) return {position, false};
    if ((value >> kRecordBits) == tag && Matches(value & kRecordMask, key)) {
      return {position, true};
    }
    position = (position + 1) & index_mask_;
  }
}

size_t ExchangeMemory::PositionOfRecord(uint32_t record) const noexcept {
  size_t position = HashOfRecord(record) & index_mask_;
  while ((index_[position] & kRecordMask) != record) {
    DCHECK(index_[position] != kEmpty, "record in use missing from the index");
    position = (position + 1) & index_mask_;
  }
  return position;
}

void ExchangeMemory::EraseFromIndex(size_t position) noexcept {
  // Backward-shift deletion, as in DedupTable: a later position of the run whose home is not
  // inside (hole, next] moves back into the hole. Homes are recomputed from the records' keys
  // (deletions happen only when a record is reclaimed or evicted, not per request).
  size_t hole = position;
  size_t next = (hole + 1) & index_mask_;
  for (;;) {
    const uint32_t value = index_[next];
    if (value == kEmpty) break;
    const size_t home = HashOfRecord(value & kRecordMask) & index_mask_;
    if (((next - home) & index_mask_) >= ((next - hole) & index_mask_)) {
      index_[hole] = value;
      hole = next;
    }
    next = (next + 1) & index_mask_;
  }
  index_[hole] = kEmpty;
}

// ---- Records and entries -------------------------------------------------------------------

uint32_t ExchangeMemory::AdmittedAt(const Entry& e) const noexcept {
  return e.expires_at() - (e.confirmable() ? con_lifetime_s_ : non_lifetime_s_);
}

void ExchangeMemory::ReleaseEntry(Record& record, Entry& e) noexcept {
  DCHECK(e.state() != State::kFree, "releasing a free entry");
  if (e.state() == State::kPending) --record.pending;
  e.state_ = static_cast<uint8_t>(State::kFree);
  // Every outstanding Handle to this occupancy is now stale.
  e.generation_ = e.generation_ == kMaxGeneration ? 1 : e.generation_ + 1;
  --record.live;
  --live_;
}

void ExchangeMemory::DropEarly(Record& record, Entry& e, uint32_t now_s,
                               EvictionCause cause) noexcept {
  if (Expired(e.expires_at(), now_s)) {
    ++stats_.expired;
  } else {
    ++(cause == EvictionCause::kDeviceOverK ? stats_.evicted_device_over_k
                                            : stats_.evicted_table_bound);
    horizon_[static_cast<size_t>(cause)].Note(now_s - AdmittedAt(e), now_s);
  }
  ReleaseEntry(record, e);
}

void ExchangeMemory::ReleaseRecord(uint32_t record, uint32_t now_s) noexcept {
  Record& r = RecordAt(record);
  DCHECK(r.kind != kUnused, "releasing an unused record");
    for (uint32_t i = 0; i < per_device_ && r.live > 0; ++i) {
    if (EntryAt(record, i).state() == State::kFree) continue;
    DropEarly(r, EntryAt(record, i), now_s, EvictionCause::kTableBound);
  }
  EraseFromIndex(PositionOfRecord(record));
  r.kind = kUnused;
  --in_use_;
}

ExchangeMemory::Inspection ExchangeMemory::Inspect(uint32_t record,
                                                   uint32_t now_s) const noexcept {
  const Record& r = RecordAt(record);
  if (r.live == 0) return {true, false};
  // Every entry was admitted at or before last_active_s and lives at most con_lifetime_s.
  if (Expired(r.last_active_s() + con_lifetime_s_, now_s)) return {true, false};
  Inspection in{true, false};
  for (uint32_t i = 0; i < per_device_; ++i) {
    const Entry& e = EntryAt(record, i);
    if (e.state() == State::kFree || Expired(e.expires_at(), now_s)) continue;
    in.all_expired = false;
    if (e.state() == State::kPending) in.live_pending = true;
  }
  return in;
}

uint32_t ExchangeMemory::AcquireRecord(uint32_t now_s) noexcept {
  if (free_head_ != kNoRecord) {
    const uint32_t record = free_head_;
    free_head_ = RecordAt(record).last_active_s();
    return record;
  }
  if (fresh_ < devices_) return fresh_++;

  // The table bound: every record is in use. Scan a window at the hand (see the header).
  uint32_t victim = kNoRecord;
  bool victim_empty = false;
  const uint32_t scan = std::min(kEvictionScan, devices_);
  for (uint32_t n = 0; n < scan; ++n) {
    const uint32_t record = hand_;
    hand_ = hand_ + 1 == devices_ ? 0 : hand_ + 1;
    const Inspection in = Inspect(record, now_s);
    if (in.all_expired) {
      victim = record;
      victim_empty = true;
      break;
    }
    if (in.live_pending) continue;
    if (victim == kNoRecord ||
        Before(RecordAt(record).last_active_s(), RecordAt(victim).last_active_s())) {
      victim = record;
    }
  }
  if (victim == kNoRecord) return kNoRecord;
  if (victim_empty) ++stats_.records_reclaimed;
  ReleaseRecord(victim, now_s);
  return victim;
}

ExchangeMemory::Admission ExchangeMemory::Store(uint32_t record, uint32_t index,
                                                uint16_t message_id,
                                                std::span<const std::byte> token,
                                                bool confirmable, uint32_t now_s) noexcept {
  Record& r = RecordAt(record);
  Entry& e = EntryAt(record, index);
  DCHECK(e.state() == State::kFree, "filling an entry in use");
  e.token_ = {};
  if (!token.empty()) std::memcpy(e.token_.data(), token.data(), token.size());
  e.token_length_ = static_cast<uint8_t>(token.size()) & 0xf;
  e.message_id_ = message_id;
  e.response_message_id_ = 0;
  e.response_code_ = 0;
  e.response_type_ = 0;
  e.max_age_ = 0;
  const uint32_t expires_at = now_s + (confirmable ? con_lifetime_s_ : non_lifetime_s_);
  e.expires_low_ = static_cast<uint16_t>(expires_at);
  e.expires_high_ = static_cast<uint16_t>(expires_at >> 16);
  e.confirmable_ = confirmable ? 1 : 0;
  e.state_ = static_cast<uint8_t>(State::kPending);
  ++r.live;
  ++r.pending;
  ++live_;
  r.set_last_active_s(now_s);
  const uint32_t slot = SlotOf(record, index);
  return {Verdict::kNew, {slot, static_cast<uint16_t>(e.generation_)}, &e};
}

ExchangeMemory::Admission ExchangeMemory::AdmitKnown(uint32_t record, uint16_t message_id,
                                                     std::span<const std::byte> token,
                                                     bool confirmable, uint32_t now_s) noexcept {
  Record& r = RecordAt(record);
    // One pass: the entry with this MID if any, else the candidates for its slot in order of
  // preference (free, expired, the device's own oldest done entry).
  constexpr uint32_t kNone = UINT32_MAX;
  uint32_t match = kNone;
  uint32_t free = kNone;
  uint32_t expired = kNone;
  uint32_t oldest_done = kNone;
  uint32_t oldest_admitted = 0;
  for (uint32_t i = 0; i < per_device_; ++i) {
    const Entry& e = EntryAt(record, i);
    if (e.state() == State::kFree) {
      if (free == kNone) free = i;
      continue;
    }
    if (e.message_id_ == message_id) {
      match = i;
      break;
    }
    if (Expired(e.expires_at(), now_s)) {
      if (expired == kNone) expired = i;
    } else if (e.state() == State::kDone) {
      const uint32_t admitted = AdmittedAt(e);
      if (oldest_done == kNone || Before(admitted, oldest_admitted)) {
        oldest_done = i;
        oldest_admitted = admitted;
      }
    }
  }

  uint32_t slot;
  if (match != kNone) {
    Entry& e = EntryAt(record, match);
    const bool e_expired = Expired(e.expires_at(), now_s);
    if (!e_expired && e.token_length_ == token.size() &&
        (token.empty() || std::memcmp(e.token_.data(), token.data(), token.size()) == 0)) {
      const bool pending = e.state() == State::kPending;
      ++(pending ? stats_.hits_pending : stats_.hits_done);
      r.set_last_active_s(now_s);
      return {pending ? Verdict::kDuplicatePending : Verdict::kDuplicateDone,
              {SlotOf(record, match), static_cast<uint16_t>(e.generation_)}, &e};
    }
    // Rewritten in place: a reboot reused the MID, or the old exchange is over.
    ++(e_expired ? stats_.expired : stats_.token_mismatches);
    ReleaseEntry(r, e);
    slot = match;
  } else if (free != kNone) {
    slot = free;
  } else if (expired != kNone) {
    ++stats_.expired;
    ReleaseEntry(r, EntryAt(record, expired));
    slot = expired;
  } else if (oldest_done != kNone) {
    DropEarly(r, EntryAt(record, oldest_done), now_s, EvictionCause::kDeviceOverK);
    slot = oldest_done;
  } else {
    // All K alive and pending: this device alone is beyond its bound.
    ++stats_.full_refusals;
    return {Verdict::kFull, kNoHandle, nullptr};
  }
  return Store(record, slot, message_id, token, confirmable, now_s);
}

ExchangeMemory::Admission ExchangeMemory::Admit(const DeviceKey& device, uint16_t message_id,
                                                std::span<const std::byte> token,
                                                bool confirmable, uint32_t now_s) noexcept {
  DCHECK(token.size() <= codec::kMaxTokenLength, "a token longer than CoAP allows");
  if (device.kind > DeviceKey::kDtls) {  // would alias kUnused in Record::kind
    DCHECK(false, "DeviceKey::kind must be kPlain or kDtls");
    ++stats_.full_refusals;
    return {Verdict::kFull, kNoHandle, nullptr};
  }
  token = token.first(std::min(token.size(), codec::kMaxTokenLength));
  const uint64_t hash = HashDeviceKey(device, hash_seed_);
  Probe probe = FindRecord(device, hash);
  if (probe.found) {
    return AdmitKnown(index_[probe.position] & kRecordMask, message_id, token, confirmable,
                      now_s);
  }
  const bool at_bound = free_head_ == kNoRecord && fresh_ == devices_;
  const uint32_t record = AcquireRecord(now_s);
  if (record == kNoRecord) {
    ++stats_.full_refusals;
    return {Verdict::kFull, kNoHandle, nullptr};
  }
  // An eviction's backward shift may have opened an earlier empty position on this key's
  // chain; inserting past it would make the key unreachable.
  if (at_bound) probe = FindRecord(device, hash);
  index_[probe.position] = (Tag(hash) << kRecordBits) | record;
  Record& r = RecordAt(record);
  r.key = device.bytes;
  r.kind = device.kind;
  r.live = 0;
  r.pending = 0;
  ++in_use_;
  return Store(record, 0, message_id, token, confirmable, now_s);
}

// ---- Handles -------------------------------------------------------------------------------

const ExchangeMemory::Entry* ExchangeMemory::Get(Handle h) const noexcept {
  // Slot 0 of every stride is a record, never an entry: {0, 0} and forged handles stop here.
  if (h.slot >= slots_.size() || h.slot % stride_ == 0) return nullptr;
  const Entry& e = slots_[h.slot].entry;
  if (e.generation_ != h.generation || e.state() == State::kFree) return nullptr;
  return &e;
}

ExchangeMemory::Entry* ExchangeMemory::LiveEntry(Handle h) noexcept {
  return Get(h) == nullptr ? nullptr : &slots_[h.slot].entry;
}

bool ExchangeMemory::Complete(Handle h, uint8_t response_code, uint8_t response_type,
                              uint16_t response_message_id, uint16_t max_age) noexcept {
  Entry* e = LiveEntry(h);
  if (e == nullptr || e->state() != State::kPending) return false;
  e->response_code_ = response_code;
  e->response_type_ = response_type & 0x3;  // a CoAP message type is 2 bits
  e->response_message_id_ = response_message_id;
  e->max_age_ = max_age;
  e->state_ = static_cast<uint8_t>(State::kDone);
  --RecordAt(h.slot / stride_).pending;
  return true;
}

void ExchangeMemory::ForEachDone(uint32_t now_s,
                                 const std::function<void(const SavedExchange&)>& visit) const {
  for (uint32_t record = 0; record < fresh_; ++record) {
    const Record& r = RecordAt(record);
    if (r.kind == kUnused) continue;
    for (uint32_t i = 0; i < per_device_; ++i) {
      const Entry& e = EntryAt(record, i);
      if (e.state() != State::kDone || Expired(e.expires_at(), now_s)) continue;
      SavedExchange out{};
      out.device = DeviceKey{r.key, static_cast<uint8_t>(r.kind)};
      out.message_id = e.message_id_;
      out.confirmable = e.confirmable();
      out.token_length = e.token_length_;
      out.token = e.token_;
      out.response_code = e.response_code_;
      out.response_type = e.response_type_;
      out.response_message_id = e.response_message_id_;
      out.max_age = e.max_age_;
      out.remaining_s = e.expires_at() - now_s;
      visit(out);
    }
  }
}

bool ExchangeMemory::Restore(const SavedExchange& saved, uint32_t now_s) noexcept {
  if (saved.device.kind > DeviceKey::kDtls || saved.token_length > codec::kMaxTokenLength ||
      saved.remaining_s == 0) {
    return false;
  }
  const Admission admission =
      Admit(saved.device, saved.message_id,
            std::span<const std::byte>(saved.token.data(), saved.token_length),
            saved.confirmable, now_s);
  if (admission.verdict != Verdict::kNew) return false;
  Complete(admission.handle, saved.response_code, saved.response_type,
           saved.response_message_id, saved.max_age);
  Entry* e = LiveEntry(admission.handle);
  const uint32_t lifetime = saved.confirmable ? con_lifetime_s_ : non_lifetime_s_;
  const uint32_t expires_at = now_s + std::min(saved.remaining_s, lifetime);
  e->expires_low_ = static_cast<uint16_t>(expires_at);
  e->expires_high_ = static_cast<uint16_t>(expires_at >> 16);
  return true;
}

void ExchangeMemory::Forget(Handle h) noexcept {
  Entry* e = LiveEntry(h);
  if (e == nullptr || e->state() != State::kPending) return;
  ReleaseEntry(RecordAt(h.slot / stride_), *e);
}

const ExchangeMemory::Entry* ExchangeMemory::Find(const DeviceKey& device,
                                                  uint16_t message_id) const noexcept {
  if (device.kind > DeviceKey::kDtls) return nullptr;
  const Probe probe = FindRecord(device, HashDeviceKey(device, hash_seed_));
  if (!probe.found) return nullptr;
  const uint32_t record = index_[probe.position] & kRecordMask;
  for (uint32_t i = 0; i < per_device_; ++i) {
    const Entry& e = EntryAt(record, i);
    if (e.state() != State::kFree && e.message_id_ == message_id) return &e;
  }
  return nullptr;
}

// ---- Sweep and the horizon -----------------------------------------------------------------

size_t ExchangeMemory::Sweep(uint32_t now_s, size_t max_records) noexcept {
  size_t freed = 0;
  const size_t budget = std::min<size_t>(max_records, fresh_);
  for (size_t n = 0; n < budget; ++n) {
    if (sweep_ >= fresh_) sweep_ = 0;
    const uint32_t record = sweep_++;
    Record& r = RecordAt(record);
    if (r.kind == kUnused) continue;
        for (uint32_t i = 0; i < per_device_ && r.live > 0; ++i) {
      Entry& e = EntryAt(record, i);
      if (e.state() != State::kFree && Expired(e.expires_at(), now_s)) {
        ++stats_.expired;
        ReleaseEntry(r, e);
      }
    }
    if (r.live != 0) continue;
    ReleaseRecord(record, now_s);
    r.set_last_active_s(free_head_);
    free_head_ = record;
    ++stats_.records_reclaimed;
    ++freed;
  }
  return freed;
}

void ExchangeMemory::HorizonGauge::Note(uint32_t age_s, uint32_t now_s) noexcept {
  const uint32_t now_window = now_s / kHorizonWindowS;
  if (now_window != window) {
    previous = now_window == window + 1 ? current : kNoAge;
    current = kNoAge;
    window = now_window;
  }
  current = std::min(current, age_s);
}

uint32_t ExchangeMemory::HorizonGauge::Youngest(uint32_t now_s) const noexcept {
  const uint32_t now_window = now_s / kHorizonWindowS;
  if (now_window == window) return std::min(current, previous);
  if (now_window == window + 1) return current;
  return kNoAge;
}

uint32_t ExchangeMemory::EffectiveHorizonS(uint32_t now_s) const noexcept {
  return std::min({horizon_[0].Youngest(now_s), horizon_[1].Youngest(now_s), con_lifetime_s_});
}

uint32_t ExchangeMemory::EffectiveHorizonS(uint32_t now_s, EvictionCause cause) const noexcept {
  return std::min(horizon_[static_cast<size_t>(cause)].Youngest(now_s), con_lifetime_s_);
}

size_t ExchangeMemory::MemoryBytes() const noexcept {
  return slots_.capacity() * sizeof(Slot) +
         index_.capacity() * sizeof(uint32_t);
}

// ---- Invariants ----------------------------------------------------------------------------

bool ExchangeMemory::CheckInvariants() const noexcept {
  if (stride_ != per_device_ + 1 || slots_.size() != size_t{devices_} * stride_) {
    return false;
  }
  if (!std::has_single_bit(index_.size()) || index_.size() < uint64_t{2} * devices_) {
    return false;
  }
  if (fresh_ > devices_ || in_use_ > fresh_) return false;
  // The free list: unused records below fresh_, each once (at most fresh_ steps).
  size_t on_free_list = 0;
  for (uint32_t r = free_head_; r != kNoRecord; r = RecordAt(r).last_active_s()) {
    if (r >= fresh_ || RecordAt(r).kind != kUnused || ++on_free_list > fresh_) return false;
  }
  size_t in_use = 0;
  size_t live = 0;
  for (uint32_t record = 0; record < devices_; ++record) {
    const Record& r = RecordAt(record);
    uint32_t non_free = 0;
    uint32_t pending = 0;
    for (uint32_t i = 0; i < per_device_; ++i) {
      const Entry& e = EntryAt(record, i);
      if (e.generation_ == 0 || e.state_ > static_cast<uint8_t>(State::kDone)) return false;
      if (e.state() == State::kFree) continue;
      if (e.token_length_ > codec::kMaxTokenLength) return false;
      ++non_free;
      if (e.state() == State::kPending) ++pending;
      for (uint32_t j = 0; j < i; ++j) {
        const Entry& other = EntryAt(record, j);
        if (other.state() != State::kFree && other.message_id_ == e.message_id_) {
          return false;
        }
      }
    }
    if (r.kind == kUnused) {
      if (non_free != 0) return false;
      continue;
    }
    if (record >= fresh_ || r.kind > DeviceKey::kDtls) return false;
    if (r.live != non_free || r.pending != pending) return false;
    ++in_use;
    live += non_free;
  }
  if (in_use != in_use_ || live != live_ || in_use + on_free_list != fresh_) return false;
  // Index: one position per record in use, tagged with its hash, reachable from its home
  // without an empty gap, and the first match of its key (so no key is in use twice).
  size_t indexed = 0;
  for (size_t position = 0; position < index_.size(); ++position) {
    const uint32_t value = index_[position];
    if (value == kEmpty) continue;
    ++indexed;
    const uint32_t record = value & kRecordMask;
    if (record >= devices_ || RecordAt(record).kind == kUnused) return false;
    const uint64_t hash = HashOfRecord(record);
    if ((value >> kRecordBits) != Tag(hash)) return false;
    for (size_t p = hash & index_mask_; p != position; p = (p + 1) & index_mask_) {
      if (index_[p] == kEmpty) return false;
    }
    const Record& r = RecordAt(record);
    const Probe probe = FindRecord(DeviceKey{r.key, static_cast<uint8_t>(r.kind)}, hash);
    if (!probe.found || probe.position != position) return false;
  }
  return indexed == in_use_;
}

}  // namespace coapgate::engine
