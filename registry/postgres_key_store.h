// PostgresKeyStore: the KeyStore of several nodes sharing one PostgreSQL database
// (`[devices] backend = "postgres"`, docs/cluster.md): the bootstrap state is the table
// coapgate_bootstrap (registry/postgres/0002_bootstrap.sql), so a key generated through node A
// is the key node B hands out and accepts in a handshake.
//
// The regeneration window is decided by the DATABASE's clock, in one statement:
//   INSERT ... ON CONFLICT (iccid) DO UPDATE SET key = EXCLUDED.key, last_call = now()
//     WHERE t.key IS NULL OR t.last_call <= now() - window RETURNING key
// and, when that returns no row (the key is still fresh), a second statement that records the
// call and returns the key in force. Two nodes bootstrapping one device at once are ordered by
// the row lock: the second sees the first's new row and returns its key. (A one-statement CTE
// form reads the row before the lock and hands out a stale key under concurrency.) Each
// statement commits before Bootstrap returns (synchronous_commit as the database says; on by
// default), so a key a device was told is durable.
//
// Memory: every row is held in a map (loaded whole at Open), which GeneratedKey, StateOf and
// size read without touching the database. A follower thread (PostgresChangeFollower) LISTENs
// on `coapgate_bootstrap` (payload: the ICCID whose key changed) and fetches those rows; after
// every (re)connect it reloads the whole table, since NOTIFY is not replayed. An entry is only
// replaced by a row with a later or equal last_call (the database's clock, microseconds), so a
// follower's late read never undoes a newer Bootstrap. The last_call of a call that kept its
// key is not announced: another node's StateOf may show an older call time until its next
// reload. A handshake that misses (KeyMissed: a registered device with no key in memory)
// posts the ICCID to a KeyFetchQueue (registry/key_fetch_queue.h: per-ICCID cooldown,
// bounded, counted); the follower's thread, woken by its fd, fetches the batch with one query
// and merges it, so a key made on another node is accepted on the device's next attempt even
// before (or without) its NOTIFY. coapgate never deletes rows; one deleted by hand stays in the nodes' memory until
// they restart.
//
// Thread contract: Bootstrap from any thread (serialized; the bootstrap worker in the server);
// it owns its connection and reconnects on the next call after a failure. GeneratedKey, StateOf,
// size from any thread: a shared lock held for one hash probe; the lock is taken exclusively
// only to change the map, never across a query, so a handshake never waits for the database.
#pragma once

#include <atomic>
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
#include <vector>

#include "common/error.h"
#include "common/result.h"
#include "registry/key_fetch_queue.h"
#include "registry/key_store.h"

namespace coapgate::registry {

class PostgresChangeFollower;
class PostgresConnection;

// The NOTIFY channel of bootstrap key changes; the payload is the ICCID.
inline constexpr const char* kBootstrapChangesChannel = "coapgate_bootstrap";

class PostgresKeyStore final : public KeyStore {
 public:
  // Connects to `dsn`, applies the schema's migrations, loads the table and starts following
  // it. A database that cannot be reached is not a failure (the node serves its registry
  // snapshot, docs/cluster.md): the store starts empty and unavailable(), and the follower
  // migrates and loads the table once it connects. Fails (kEnvironment) when the database is
  // reached but refuses the migration or the read.
  [[nodiscard]] static Result<std::unique_ptr<PostgresKeyStore>, Error> Open(
      const std::string& dsn, uint32_t regenerate_after_s);

  PostgresKeyStore(const PostgresKeyStore&) = delete;
  PostgresKeyStore& operator=(const PostgresKeyStore&) = delete;
  ~PostgresKeyStore() override;  // stops the follower

  // KeyStore::Bootstrap, with the window measured on the database's clock: `now_s` is not used.
  // Fails when the database cannot be reached (then unavailable() is true) or refuses.
  [[nodiscard]] Result<std::string, std::string> Bootstrap(std::string_view iccid,
                                                           std::string_view user_psk,
                                                           uint64_t now_s) override;
  [[nodiscard]] size_t GeneratedKey(std::string_view iccid,
                                    std::span<std::byte> out) const noexcept override;
  // Posts `iccid` for a fetch (the shard's side: a mutex held for one table probe, no
  // allocation, no I/O but an eventfd write).
  void KeyMissed(std::string_view iccid) const noexcept override;
  [[nodiscard]] std::optional<BootstrapState> StateOf(std::string_view iccid) const override;
  [[nodiscard]] size_t size() const noexcept override;
  [[nodiscard]] const std::string& name() const noexcept override { return name_; }
  [[nodiscard]] bool unavailable() const noexcept override {
    return unavailable_.load(std::memory_order_acquire);
  }

  // The follower holds a live, listening connection (tests, /readyz).
  [[nodiscard]] bool following() const noexcept;
  // The follower of coapgate_bootstrap, for /readyz and /metrics (connection state, counters).
  [[nodiscard]] const PostgresChangeFollower& follower() const noexcept { return *follower_; }

  // Fetches of missed keys: the posts (KeyFetchQueue's counters), then per ICCID fetched:
  // `found` (its row holds a generated key, now in memory), `absent` (no row, or no generated
  // key: never bootstrapped, or a user-set key), `failed` (the query failed; the reconnect's
  // reload of the whole table covers it).
  [[nodiscard]] const KeyFetchQueue& fetch_queue() const noexcept { return *fetch_queue_; }
  [[nodiscard]] uint64_t fetched_found() const noexcept {
    return fetched_found_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] uint64_t fetched_absent() const noexcept {
    return fetched_absent_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] uint64_t fetch_failed() const noexcept {
    return fetch_failed_.load(std::memory_order_relaxed);
  }

 private:
  struct Entry {
    std::string generated_key;  // empty = none
    int64_t last_call_us = 0;   // the database's clock, Unix microseconds
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  using Map = std::unordered_map<std::string, Entry, Hash, std::equal_to<>>;
  struct Row {
    std::string iccid;
    Entry entry;
  };

  PostgresKeyStore(std::string dsn, uint32_t regenerate_after_s);

  // Reads rows (all, or those of `iccids`) on `db`; merges them into the map. Returns how
  // many of them hold a generated key.
  [[nodiscard]] Result<size_t, Error> Fetch(PostgresConnection& db,
                                            const std::vector<std::string>* iccids);
  // The follower's `woken`: fetches the ICCIDs KeyMissed posted, one query for the batch.
  [[nodiscard]] Result<void, Error> FetchMissed(PostgresConnection& db);
  // Applies rows: each replaces its entry when at least as recent. Takes the map lock in
  // bounded chunks so readers wait at most for one chunk.
  void Merge(std::vector<Row> rows);
  // The bootstrap connection, connected when needed. REQUIRES write_mutex_.
  [[nodiscard]] Result<PostgresConnection*, std::string> Connection();

  const std::string dsn_;
  const std::string name_;
  const uint32_t regenerate_after_s_;

  std::mutex write_mutex_;  // serializes Bootstrap and guards db_
  std::unique_ptr<PostgresConnection> db_;
  uint64_t last_failure_ms_ = 0;  // MonotonicMs of the last failed connect; 0: none
  bool migrated_ = false;         // this store has seen the schema migrated
  std::atomic<bool> unavailable_{false};

  mutable std::shared_mutex map_mutex_;  // shared for readers; exclusive only to change map_
  Map map_;

  // Before follower_: the follower's thread reads it until the follower is destroyed.
  const std::unique_ptr<KeyFetchQueue> fetch_queue_;
  std::vector<std::string> missed_;  // the follower's thread only: the batch being fetched
  std::atomic<uint64_t> fetched_found_{0};
  std::atomic<uint64_t> fetched_absent_{0};
  std::atomic<uint64_t> fetch_failed_{0};

  std::unique_ptr<PostgresChangeFollower> follower_;
};

}  // namespace coapgate::registry
