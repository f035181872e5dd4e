// DeviceRegistry: an immutable snapshot of the known devices (docs/registry.md), with O(1)
// lookup by source address (once per datagram) and by ICCID (DTLS PSK identity). Built from
// the operator's CSV file (LoadCsvFile, ParseCsv) or row by row by any other DeviceSource
// (Builder), with the same validation either way.
//
// Thread contract: a snapshot is immutable once loaded, so any number of threads may read one
// at the same time without locking. A reload (SIGHUP) builds a new snapshot and swaps the
// shared_ptr; readers that still hold the old one keep it, and every view into it, alive.
// The one exception is each device's activity (device_activity.h): two words of relaxed
// atomics beside its record, stored by the shards that answer the device and loaded by the
// admin listener, never a lock.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/limits.h"
#include "common/result.h"
#include "net/ip_address.h"
#include "registry/device_activity.h"

namespace coapgate::registry {

enum class PskFormat : uint8_t {
  kString,  ///< the key is the PSK text's bytes
  kHex,     ///< the key is the bytes the PSK text spells in hex digits
};

// A device as the registry holds it. Views point into the registry snapshot and are valid as
// long as the std::shared_ptr<const DeviceRegistry> that produced them is held.
struct DeviceView {
  std::string_view iccid;
  std::string_view imsi;        ///< may be empty
  std::optional<net::IpAddress> ip;  ///< absent for DTLS-only devices (empty ip column)
  bool active;
  std::string_view psk;  ///< empty = no user-set key; the text exactly as in the CSV
  PskFormat psk_format;
  uint32_t index = 0;  ///< the device's place in its snapshot: Get(index), *Activity(index)
};

// Limits of the CSV's fields: common/limits.h.

class DeviceRegistry {
 public:
  // Loads and validates the whole file; returns the snapshot or ONE line "PATH:LINE: reason"
  // (LINE 1-based; for file-level errors just "PATH: reason"). The kind is kEnvironment when
  // the system refuses the file (cannot open, stat or read), else kBadInput. Control plane.
  [[nodiscard]] static Result<std::shared_ptr<const DeviceRegistry>, Error> LoadCsvFile(
      const std::string& path);
  // Same from text in memory; `name` replaces PATH in errors. Nothing in the snapshot refers
  // to `text` afterwards.
  [[nodiscard]] static Result<std::shared_ptr<const DeviceRegistry>, Error> ParseCsv(
      std::string_view text, std::string_view name);

  class Builder;

  DeviceRegistry(const DeviceRegistry&) = delete;
  DeviceRegistry& operator=(const DeviceRegistry&) = delete;

  [[nodiscard]] size_t size() const noexcept { return records_.size(); }
  [[nodiscard]] bool empty() const noexcept { return records_.empty(); }

  // The index-th device in file order (for iteration, e.g. diffing two snapshots on reload).
  // REQUIRES: index < size().
  [[nodiscard]] DeviceView Get(size_t index) const noexcept;
  // Hot path (per datagram): no allocation, no lock. IPv4 and its v4-mapped IPv6 form are the
  // same address here, as everywhere in IpAddress.
  [[nodiscard]] std::optional<DeviceView> FindByIp(const net::IpAddress& ip) const noexcept;
  // Exact byte match on the ICCID text; no allocation.
  [[nodiscard]] std::optional<DeviceView> FindByIccid(std::string_view iccid) const noexcept;

  // Heap bytes owned by this snapshot (arena + records + indexes + the object itself).
  [[nodiscard]] size_t MemoryBytes() const noexcept;

  // The device's activity (device_activity.h), by DeviceView::index of this snapshot. Any
  // thread, relaxed: a store is one 64-bit word, so a reader sees one whole store, never a
  // mix; between the two words there is no ordering (a reader may see a handshake failure
  // newer than the request word, or older). Const: the activity is not the registry's
  // contents, and the snapshot is shared as const. REQUIRES: index < size().
  void StoreRequestActivity(uint32_t index, const RequestActivity& activity) const noexcept {
    std::atomic_ref<uint64_t>(records_[index].activity)
        .store(Pack(activity), std::memory_order_relaxed);
  }
  [[nodiscard]] RequestActivity LoadRequestActivity(uint32_t index) const noexcept {
    return UnpackRequest(
        std::atomic_ref<uint64_t>(records_[index].activity).load(std::memory_order_relaxed));
  }
  void StoreHandshakeActivity(uint32_t index, const HandshakeActivity& activity) const noexcept {
    handshakes_[index].store(Pack(activity), std::memory_order_relaxed);
  }
  [[nodiscard]] HandshakeActivity LoadHandshakeActivity(uint32_t index) const noexcept {
    return UnpackHandshake(handshakes_[index].load(std::memory_order_relaxed));
  }
  // Whether this node knows the device's first registration (its LIFECYCLE
  // DEVICE_FIRST_TIME_REGISTERED event, engine/first_registration.h) to have happened: one
  // byte per device, relaxed atomics like the activity. kUnknown: the next interaction asks
  // the database; kClaiming: that question is queued or on its way; kRegistered: the
  // database says the device was seen (by this node or another), nothing more to ask.
  enum class Registration : uint8_t { kUnknown = 0, kClaiming = 1, kRegistered = 2 };
  [[nodiscard]] Registration LoadRegistration(uint32_t index) const noexcept {
    return static_cast<Registration>(registrations_[index].load(std::memory_order_relaxed));
  }
  // kUnknown -> kClaiming; true when this caller made the move (and so owns the question).
  [[nodiscard]] bool BeginRegistration(uint32_t index) const noexcept {
    uint8_t expected = static_cast<uint8_t>(Registration::kUnknown);
    return registrations_[index].compare_exchange_strong(
        expected, static_cast<uint8_t>(Registration::kClaiming), std::memory_order_relaxed);
  }
  // The question could not be asked or answered (queue full, database away): the next
  // interaction asks again.
  void AbandonRegistration(uint32_t index) const noexcept {
    registrations_[index].store(static_cast<uint8_t>(Registration::kUnknown),
                                std::memory_order_relaxed);
  }
  void MarkRegistered(uint32_t index) const noexcept {
    registrations_[index].store(static_cast<uint8_t>(Registration::kRegistered),
                                std::memory_order_relaxed);
  }

  // Copies the activity of every device `previous` also has (same ICCID) into this snapshot,
  // and its kRegistered (not kClaiming: the question in flight settles on the snapshot current
  // when it is answered): the reload calls it before publishing, so a SIGHUP does not make
  // every device look never seen. Stores the shards make on `previous` after the copy (until they pick up this
  // snapshot, at most one loop turn) are lost. Control plane: O(size()).
  void InheritActivity(const DeviceRegistry& previous) const noexcept;

 private:
  class Loader;  // the CSV file's reader: header, then rows into a Builder (device_registry.cc)

  // One device in 32 bytes; its text lives in `arena_` as iccid, imsi, psk back to back from
  // `text_offset`. Fixed-size and pointer-free so that 1M devices are one allocation (at most
  // 200 bytes per device, docs/registry.md) and lookups touch one cache line per candidate.
  // The request activity word sits in the record, so the shard's store after a lookup hits
  // the line the lookup just read (32-byte records never straddle a 64-byte line).
  struct Record {
    net::IpAddress ip;  // :: when !(flags & kHasIp)
    uint32_t text_offset;
    uint8_t iccid_length;
    uint8_t imsi_length;
    uint8_t psk_length;
    uint8_t flags;  // kHasIp | kActive | kHexPsk
    // Pack(RequestActivity), only through std::atomic_ref (mutable: see StoreRequestActivity).
    alignas(8) mutable uint64_t activity = 0;
  };
  static_assert(sizeof(Record) == 32);
  static_assert(std::atomic_ref<uint64_t>::required_alignment <= alignof(Record));

  // Open addressing with linear probing over record indexes. Invariants: the capacity is a
  // power of two, at most half the slots are used (so a probe sequence always ends at an empty
  // slot, after ~1.5 probes for a hit on average), and every key appears at most once.
  struct Index {
    std::vector<uint32_t> slots;  // record index, or kEmptySlot
    size_t mask = 0;              // slots.size() - 1
  };

  DeviceRegistry() = default;

  [[nodiscard]] std::string_view IccidOf(const Record& r) const noexcept;
  [[nodiscard]] DeviceView ViewOf(const Record& r) const noexcept;

  std::vector<char> arena_;
  std::vector<Record> records_;
  Index by_ip_;     // only devices that have an ip
  Index by_iccid_;  // every device
  // Pack(HandshakeActivity) per record: apart from the records because only failing
  // handshakes write it (a cold path), so the hot records stay 32 bytes.
  std::unique_ptr<std::atomic<uint64_t>[]> handshakes_;
  // Registration per record (one byte: a million devices cost 1 MB).
  std::unique_ptr<std::atomic<uint8_t>[]> registrations_;
};

// Row-at-a-time construction of a snapshot with the CSV file's validation and its messages,
// for every source of devices: the CSV file, and a database table whose columns are the same
// fields as text. A second backend therefore builds the same snapshot and reports the same
// errors ("NAME:LINE: reason", naming the column and showing the value, never a key) as the
// CSV loader.
//
// Not thread-safe (one loading thread); the snapshot it finishes is immutable and shared.
class DeviceRegistry::Builder {
 public:
  // The six fields of a device, spelled as in the CSV file (docs/registry.md): status
  // "active" (any case) or anything else for inactive; psk_format empty, "string" or "hex".
  // Views only for the duration of Add: the builder copies what it keeps.
  struct Row {
    std::string_view iccid;
    std::string_view imsi;
    std::string_view ip;
    std::string_view status;
    std::string_view psk;
    std::string_view psk_format;
  };

  // `name` prefixes every error; the expected sizes only reserve memory up front (the tables
  // grow past a low guess, and Finish gives back what a high one left unused).
  Builder(std::string_view name, size_t expected_rows, size_t expected_text_bytes);
  ~Builder();
  Builder(const Builder&) = delete;
  Builder& operator=(const Builder&) = delete;

  // Validates one device and adds it; `line` (1-based: the file's line, a table's row number)
  // names it in errors, also as "first on line N" of a later duplicate ICCID or address. On
  // error nothing was added. REQUIRES: Finish not called yet.
  [[nodiscard]] Result<void, std::string> Add(const Row& row, size_t line);

  // The snapshot of every device added, in the order added. REQUIRES: called once.
  [[nodiscard]] std::shared_ptr<const DeviceRegistry> Finish() &&;

 private:
  using Index = DeviceRegistry::Index;
  static void Allocate(Index& index, size_t keys);
  static void Insert(Index& index, uint64_t hash, uint32_t record);
  void RebuildIpIndex(size_t keys);
  void RebuildIccidIndex(size_t keys);
  [[nodiscard]] std::string LineError(size_t line, std::string_view reason) const;
  [[nodiscard]] std::string FieldError(size_t line, uint8_t column, std::string_view reason,
                                       std::string_view value) const;

  std::string name_;
  std::shared_ptr<DeviceRegistry> registry_;  // null after Finish
  std::vector<uint32_t> lines_;  // record index -> line, only to name both lines of a duplicate
};

}  // namespace coapgate::registry
