// PskStore: the KeyStore of one node (`devices.state`): per ICCID the key the
// last bootstrap generated and the time of the last bootstrap call, in an SQLite file (WAL,
// synchronous=FULL), with an in-memory copy of the generated keys for DTLS handshakes.
//
// The file holds every generated key: it is created 0600 (an existing one is tightened to
// 0600), opened in SQLite's exclusive locking mode — so no shared-memory (-shm) file is ever
// mapped, which another process could truncate under us (SIGBUS), and a second coapgate on the
// same file fails to open it instead of sharing it — and watched: a state file deleted while
// running is recreated from memory before the next bootstrap is answered.
//
// Thread contract: Bootstrap may be called from any thread (calls are serialized; in the
// server only the bootstrap worker calls it, and each call waits for an fsync). GeneratedKey
// and size() may be called from any number of threads at any time, also during Bootstrap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/result.h"
#include "registry/generated_psk.h"
#include "registry/key_store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace coapgate::registry {

class PskStore final : public KeyStore {
 public:
  // Opens (creating it and its schema when needed) the state file at `path`. Refuses a file
  // that is not a coapgate state file or has a newer schema version. Errors start with the path.
  [[nodiscard]] static Result<std::unique_ptr<PskStore>, std::string> Open(
      const std::string& path, uint32_t regenerate_after_s);

  PskStore(const PskStore&) = delete;
  PskStore& operator=(const PskStore&) = delete;
  ~PskStore() override;

  // One bootstrap call of `iccid` at `now_s` (Unix seconds), per reference §3.3; returns the
  // key to send:
  //   - `user_psk` non-empty (the registry's user-set key): it is returned as is and never
  //     replaced; a generated key the device had before is forgotten (the device now holds
  //     the user's key, so GeneratedKey no longer returns it);
  //   - no generated key yet, or now_s - (time of the previous call) >= regenerate_after_s:
  //     a new key (kGeneratedPskLength characters of kGeneratedPskAlphabet, getrandom(2));
  //   - otherwise the current generated key.
  // The call time is recorded in every case, so the window counts from the previous call,
  // not from the key's creation. A clock that went backwards counts as "within the window".
  // Returns only after the new state is committed and fsynced, and GeneratedKey already
  // answers with it. On failure (SQLite, getrandom) nothing changed; the error says why.
  // REQUIRES: iccid is non-empty.
  [[nodiscard]] Result<std::string, std::string> Bootstrap(std::string_view iccid,
                                                           std::string_view user_psk,
                                                           uint64_t now_s) override;

  // The generated key of `iccid` that its last bootstrap handed out (what DTLS must accept
  // for a device without a user-set key; a user-set key in the registry takes precedence),
  // copied into *key. False if there is none. Reads memory only: no SQLite, no I/O.
  [[nodiscard]] bool GeneratedKey(std::string_view iccid, std::string* key) const;
  // The same into `out`, for the shards' handshakes: no allocation. Returns the key's length,
  // 0 if there is none or it does not fit.
  [[nodiscard]] size_t GeneratedKey(std::string_view iccid,
                                    std::span<std::byte> out) const noexcept override;

  // What the bootstrap state says about `iccid`, without the key (for the admin listener's
  // GET /devices): whether a generated key is held, and the time of the last bootstrap call
  // (the key is that call's, or an earlier one's within regenerate_after_s: the store keeps
  // call times, not key creation times). nullopt: no bootstrap state. Memory only, a shared
  // lock held for one hash lookup, like GeneratedKey: it never waits for SQLite.
  [[nodiscard]] std::optional<BootstrapState> StateOf(std::string_view iccid) const override;

  // Devices with bootstrap state (generated key or not).
  [[nodiscard]] size_t size() const noexcept override;

  // Closes the file (and its lock) / opens it again; the map in memory stays as it is.
  [[nodiscard]] Result<void, std::string> Release() override;
  [[nodiscard]] Result<void, std::string> Reacquire() override;

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] const std::string& name() const noexcept override { return path_; }

 private:
  struct Entry {
    std::string generated_key;  // empty = none
    uint64_t last_call_s = 0;
  };
  // Heterogeneous lookup: GeneratedKey takes a string_view and must not allocate a key.
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  using Map = std::unordered_map<std::string, Entry, Hash, std::equal_to<>>;

  PskStore(std::string path, uint32_t regenerate_after_s);

  // Opens the file; with `load`, fills map_ from it (at Open only: map_ is then unshared).
  [[nodiscard]] Result<void, std::string> Initialize(bool load = true);
  // Opens (creating 0600) the file at path_ and keeps a descriptor on it for FileReplaced.
  [[nodiscard]] Result<void, std::string> OpenFile();
  // True when the file we hold is no longer the one at path_ (deleted, or renamed over).
  [[nodiscard]] bool FileGone() const;
  // Rewrites the whole in-memory state into a fresh file at path_. REQUIRES write_mutex_.
  [[nodiscard]] Result<void, std::string> Recreate();
  void CloseFile();
  [[nodiscard]] std::string SqliteError(std::string_view what) const;

  const std::string path_;
  const uint32_t regenerate_after_s_;
  sqlite3* db_ = nullptr;
  int file_fd_ = -1;  // the state file as opened: fstat tells whether it was unlinked
  sqlite3_stmt* upsert_ = nullptr;
  bool released_ = false;  // Release: the file is a successor's; guarded by write_mutex_

  std::mutex write_mutex_;  // serializes Bootstrap (the SQLite handle and every change)
  mutable std::shared_mutex map_mutex_;  // guards map_: shared for readers, unique to change
  Map map_;
};

}  // namespace coapgate::registry
