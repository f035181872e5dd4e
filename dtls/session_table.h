// SessionTable: the bounded bookkeeping behind a shard's DTLS sessions. It owns no wolfSSL
// object; the endpoint keeps its per-session state in a parallel array indexed by slot.
//
// Every slot is preallocated at construction and is free, handshaking or established. The
// table keeps:
// - an index from PeerKey (peer address, port, receiving socket) to the slot serving that
//   address: a chained hash with a per-table random seed;
// - handshaking slots in start order (a FIFO: the handshake timeout is one constant, so the
//   oldest is always the next to expire);
// - established slots in least-recently-used order (idle eviction takes the stale end);
// - for an address whose established session is being replaced by a fresh handshake (a
//   device that rebooted, RFC 6347 §4.2.8), a *successor* slot linked to the established one
//   and not in the index, until the endpoint establishes it in its predecessor's place.
// Every operation is O(1) (hash lookups on average).
//
// Invariants:
// - The index holds exactly the slots that are live and not successors.
// - A slot has a successor only if it is established; a successor is always handshaking.
// - SessionId = generation << 32 | slot. The generation changes whenever a slot is reused,
//   so an id held after its session ended never reaches a newer session.
//
// Thread contract: one shard's; no internal synchronisation.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace coapgate::dtls {

using SessionId = uint64_t;

// A peer's canonical identity for the table and for cookies: the IPv6 address (IPv4 as
// v4-mapped), port, receiving socket and IPv6 scope, with no padding or stray bytes from the
// kernel's sockaddr.
struct PeerKey {
  // [0,16) address, [16,18) port (network order), [18,20) socket, [20,24) scope id.
  std::array<std::byte, 24> bytes{};

  [[nodiscard]] std::span<const std::byte> span() const noexcept { return bytes; }
  bool operator==(const PeerKey&) const noexcept = default;
};

// False for families other than AF_INET/AF_INET6 or a length too short for the family.
[[nodiscard]] bool MakePeerKey(const sockaddr* address, socklen_t length, uint16_t socket,
                               PeerKey* out) noexcept;

class SessionTable {
 public:
  static constexpr uint32_t kNone = 0xffffffff;
  enum class State : uint8_t { kFree, kHandshaking, kEstablished };

  // REQUIRES: 0 < capacity < kNone. Allocates everything now (about 64 B per slot).
  SessionTable(uint32_t capacity, uint64_t hash_seed);
  SessionTable(const SessionTable&) = delete;
  SessionTable& operator=(const SessionTable&) = delete;

  // The slot serving `key` (handshaking or established, never a successor), or kNone.
  [[nodiscard]] uint32_t Find(const PeerKey& key) const noexcept;
  // The live slot of `id`, or kNone if that session has ended.
  [[nodiscard]] uint32_t SlotOf(SessionId id) const noexcept;
  [[nodiscard]] SessionId IdOf(uint32_t slot) const noexcept;

  [[nodiscard]] State state(uint32_t slot) const noexcept { return slots_[slot].state; }
  [[nodiscard]] const PeerKey& key(uint32_t slot) const noexcept { return slots_[slot].key; }
  // Start time of a handshake; last activity of an established session.
  [[nodiscard]] uint64_t stamp(uint32_t slot) const noexcept { return slots_[slot].stamp_ms; }
  // The pending replacement of an established slot, or kNone.
  [[nodiscard]] uint32_t successor(uint32_t slot) const noexcept;
  // The established slot a successor will replace, or kNone.
  [[nodiscard]] uint32_t predecessor(uint32_t slot) const noexcept;

  // A new handshaking slot indexed under `key`; kNone if the table is full.
  // REQUIRES: Find(key) == kNone.
  [[nodiscard]] uint32_t AddHandshake(const PeerKey& key, uint64_t now_ms) noexcept;
  // A new handshaking successor of `established`; kNone if the table is full.
  // REQUIRES: state(established) == kEstablished and successor(established) == kNone.
  [[nodiscard]] uint32_t AddSuccessor(uint32_t established, uint64_t now_ms) noexcept;
  // The handshake on `slot` completed: it becomes the most recently used established slot.
  // REQUIRES: state(slot) == kHandshaking and predecessor(slot) == kNone (remove the
  // predecessor first; that puts the successor in the index).
  void Establish(uint32_t slot, uint64_t now_ms) noexcept;
  // Authenticated activity on an established slot.
  void Touch(uint32_t slot, uint64_t now_ms) noexcept;
  // Frees a live slot. Removing an established slot that has a successor puts the successor
  // in the index under the same key, as an ordinary handshake.
  void Remove(uint32_t slot) noexcept;

  // Handshaking slots, oldest start first (successors included).
  [[nodiscard]] uint32_t OldestHandshake() const noexcept { return handshakes_.head; }
  [[nodiscard]] uint32_t NextHandshake(uint32_t slot) const noexcept { return slots_[slot].next; }
  // The established slot idle longest, or kNone.
  [[nodiscard]] uint32_t LeastRecentlyUsed() const noexcept { return established_.head; }

  [[nodiscard]] uint32_t capacity() const noexcept { return static_cast<uint32_t>(slots_.size()); }
  [[nodiscard]] uint32_t size() const noexcept { return handshakes_.size + established_.size; }
  [[nodiscard]] uint32_t handshakes() const noexcept { return handshakes_.size; }
  [[nodiscard]] uint32_t established() const noexcept { return established_.size; }
  // Bytes preallocated by the table (slots and index).
  [[nodiscard]] size_t memory_bytes() const noexcept;

 private:
  struct Slot {
    PeerKey key;
    uint32_t generation = 0;
    uint32_t hash_next = kNone;
    uint32_t prev = kNone;  // links in exactly one of free_, handshakes_, established_
    uint32_t next = kNone;
    uint32_t partner = kNone;  // successor of an established slot / predecessor of a successor
    State state = State::kFree;
    bool is_successor = false;
    uint64_t stamp_ms = 0;
  };
  struct List {
    uint32_t head = kNone;
    uint32_t tail = kNone;
    uint32_t size = 0;
  };

  uint32_t Allocate(uint64_t now_ms) noexcept;
  void PushBack(List* list, uint32_t slot) noexcept;
  void Unlink(List* list, uint32_t slot) noexcept;
  [[nodiscard]] uint32_t Bucket(const PeerKey& key) const noexcept;
  void IndexInsert(uint32_t slot) noexcept;
  void IndexErase(uint32_t slot) noexcept;

  std::vector<Slot> slots_;
  std::vector<uint32_t> buckets_;  // power of two, >= capacity
  uint64_t seed_;
  List free_;
  List handshakes_;
  List established_;
};

}  // namespace coapgate::dtls
