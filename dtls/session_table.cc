#include "dtls/session_table.h"

#include <bit>
#include <cstring>

#include "common/check.h"

namespace coapgate::dtls {

bool MakePeerKey(const sockaddr* address, socklen_t length, uint16_t socket,
                 PeerKey* out) noexcept {
  PeerKey key;
  auto* b = key.bytes.data();
  if (address == nullptr) return false;
  if (address->sa_family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in in;
    std::memcpy(&in, address, sizeof in);
    b[10] = std::byte{0xff};  // ::ffff:a.b.c.d
    b[11] = std::byte{0xff};
    std::memcpy(b + 12, &in.sin_addr, 4);
    std::memcpy(b + 16, &in.sin_port, 2);
  } else if (address->sa_family == AF_INET6 &&
             length >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    sockaddr_in6 in6;
    std::memcpy(&in6, address, sizeof in6);
    std::memcpy(b, &in6.sin6_addr, 16);
    std::memcpy(b + 16, &in6.sin6_port, 2);
    std::memcpy(b + 20, &in6.sin6_scope_id, 4);
  } else {
    return false;
  }
  std::memcpy(b + 18, &socket, 2);
  *out = key;
  return true;
}

SessionTable::SessionTable(uint32_t capacity, uint64_t hash_seed)
    : slots_(capacity),
      buckets_(std::bit_ceil(static_cast<size_t>(capacity)), kNone),
      seed_(hash_seed) {
  for (uint32_t i = 0; i < capacity; ++i) PushBack(&free_, i);
}

size_t SessionTable::memory_bytes() const noexcept {
  return slots_.capacity() * sizeof(Slot) + buckets_.capacity() * sizeof(uint32_t);
}

uint32_t SessionTable::Bucket(const PeerKey& key) const noexcept {
  // Three 64-bit words through a seeded multiply-xorshift (murmur3's finaliser per step):
  // the seed keeps peers from choosing colliding addresses, and only peers that passed the
  // cookie exchange are ever inserted.
  uint64_t h = seed_;
  for (size_t i = 0; i < key.bytes.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, key.bytes.data() + i, 8);
    h ^= w;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
  }
  return static_cast<uint32_t>(h & (buckets_.size() - 1));
}

uint32_t SessionTable::Find(const PeerKey& key) const noexcept {
  for (uint32_t s = buckets_[Bucket(key)]; s != kNone; s = slots_[s].hash_next) {
    if (slots_[s].key == key) return s;
  }
  return kNone;
}

uint32_t SessionTable::SlotOf(SessionId id) const noexcept {
  const auto slot = static_cast<uint32_t>(id & 0xffffffff);
  const auto generation = static_cast<uint32_t>(id >> 32);
  if (slot >= slots_.size()) return kNone;
  const Slot& s = slots_[slot];
  if (s.state == State::kFree || s.generation != generation) return kNone;
  return slot;
}

SessionId SessionTable::IdOf(uint32_t slot) const noexcept {
  return (static_cast<uint64_t>(slots_[slot].generation) << 32) | slot;
}

uint32_t SessionTable::successor(uint32_t slot) const noexcept {
  const Slot& s = slots_[slot];
  return s.is_successor ? kNone : s.partner;
}

uint32_t SessionTable::predecessor(uint32_t slot) const noexcept {
  const Slot& s = slots_[slot];
  return s.is_successor ? s.partner : kNone;
}

uint32_t SessionTable::Allocate(uint64_t now_ms) noexcept {
  const uint32_t slot = free_.head;
  if (slot == kNone) return kNone;
  Unlink(&free_, slot);
  Slot& s = slots_[slot];
  if (++s.generation == 0) s.generation = 1;  // 0 never names a session
  s.state = State::kHandshaking;
  s.is_successor = false;
  s.partner = kNone;
  s.hash_next = kNone;
  s.stamp_ms = now_ms;
  PushBack(&handshakes_, slot);
  return slot;
}

uint32_t SessionTable::AddHandshake(const PeerKey& key, uint64_t now_ms) noexcept {
  const uint32_t slot = Allocate(now_ms);
  if (slot == kNone) return kNone;
  slots_[slot].key = key;
  IndexInsert(slot);
  return slot;
}

uint32_t SessionTable::AddSuccessor(uint32_t established, uint64_t now_ms) noexcept {
  const uint32_t slot = Allocate(now_ms);
  if (slot == kNone) return kNone;
  Slot& s = slots_[slot];
  s.key = slots_[established].key;
  s.is_successor = true;
  s.partner = established;
  slots_[established].partner = slot;
  return slot;
}

void SessionTable::Establish(uint32_t slot, uint64_t now_ms) noexcept {
  Slot& s = slots_[slot];
  Unlink(&handshakes_, slot);
  s.state = State::kEstablished;
  s.stamp_ms = now_ms;
  PushBack(&established_, slot);
}

void SessionTable::Touch(uint32_t slot, uint64_t now_ms) noexcept {
  slots_[slot].stamp_ms = now_ms;
  if (established_.tail == slot) return;
  Unlink(&established_, slot);
  PushBack(&established_, slot);
}

void SessionTable::Remove(uint32_t slot) noexcept {
  Slot& s = slots_[slot];
  CHECK(s.state != State::kFree, "only a live slot is removed");
  Unlink(s.state == State::kEstablished ? &established_ : &handshakes_, slot);
  if (s.is_successor) {
    slots_[s.partner].partner = kNone;
  } else {
    IndexErase(slot);
    if (s.partner != kNone) {  // promote the successor into this address's index entry
      Slot& heir = slots_[s.partner];
      heir.is_successor = false;
      heir.partner = kNone;
      IndexInsert(s.partner);
    }
  }
  s.state = State::kFree;
  s.is_successor = false;
  s.partner = kNone;
  PushBack(&free_, slot);
}

void SessionTable::IndexInsert(uint32_t slot) noexcept {
  uint32_t& head = buckets_[Bucket(slots_[slot].key)];
  slots_[slot].hash_next = head;
  head = slot;
}

void SessionTable::IndexErase(uint32_t slot) noexcept {
  uint32_t* link = &buckets_[Bucket(slots_[slot].key)];
  while (*link != kNone && *link != slot) link = &slots_[*link].hash_next;
  CHECK(*link == slot, "an indexed slot is in its key's bucket chain");
  *link = slots_[slot].hash_next;
  slots_[slot].hash_next = kNone;
}

void SessionTable::PushBack(List* list, uint32_t slot) noexcept {
  Slot& s = slots_[slot];
  s.prev = list->tail;
  s.next = kNone;
  if (list->tail != kNone) {
    slots_[list->tail].next = slot;
  } else {
    list->head = slot;
  }
  list->tail = slot;
  ++list->size;
}

void SessionTable::Unlink(List* list, uint32_t slot) noexcept {
  Slot& s = slots_[slot];
  if (s.prev != kNone) {
    slots_[s.prev].next = s.next;
  } else {
    list->head = s.next;
  }
  if (s.next != kNone) {
    slots_[s.next].prev = s.prev;
  } else {
    list->tail = s.prev;
  }
  s.prev = s.next = kNone;
  --list->size;
}

}  // namespace coapgate::dtls
