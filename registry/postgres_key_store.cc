#include "registry/postgres_key_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <utility>

#include "common/clock.h"
#include "registry/generated_psk.h"
#include "registry/postgres_change_follower.h"
#include "registry/postgres_connection.h"
#include "registry/postgres_device_table.h"

namespace coapgate::registry {
namespace {

// The last call, as the Unix microseconds of the database's clock: what Merge compares.
#define COAPGATE_LAST_CALL_US "(extract(epoch FROM last_call) * 1000000)::bigint"

// Rotate, or make the first key, when the window has passed: decided by the row lock and
// the database's clock in this one statement (see the header: not a CTE).
constexpr const char* kRotate =
    "INSERT INTO coapgate_bootstrap AS t (iccid, key, last_call) VALUES ($1, $2, now()) "
    "ON CONFLICT (iccid) DO UPDATE SET key = EXCLUDED.key, last_call = now() "
    "WHERE t.key IS NULL OR t.last_call <= now() - $3::bigint * interval '1 second' "
    "RETURNING key, " COAPGATE_LAST_CALL_US;
// The key is still fresh: record the call, hand out the key in force.
constexpr const char* kTouch =
    "UPDATE coapgate_bootstrap SET last_call = now() WHERE iccid = $1 "
    "RETURNING coalesce(key, ''), " COAPGATE_LAST_CALL_US;
// A user-set key: record the call and forget a generated key.
constexpr const char* kUserKey =
    "INSERT INTO coapgate_bootstrap AS t (iccid, key, last_call) VALUES ($1, NULL, now()) "
    "ON CONFLICT (iccid) DO UPDATE SET key = NULL, last_call = now() "
    "RETURNING '', " COAPGATE_LAST_CALL_US;
constexpr const char* kSelectAll =
    "SELECT iccid, coalesce(key, ''), " COAPGATE_LAST_CALL_US " FROM coapgate_bootstrap";
constexpr const char* kSelectSome =
    "SELECT iccid, coalesce(key, ''), " COAPGATE_LAST_CALL_US
    " FROM coapgate_bootstrap WHERE iccid = ANY($1::text[])";
#undef COAPGATE_LAST_CALL_US

// A failed connection is not retried for this long: with the database away, each queued
// bootstrap then fails at once (5.03) instead of waiting out a connect timeout.
constexpr uint64_t kReconnectAfterMs = 1000;
// A handshake that missed asks for its ICCID's row at most this often: about the device's
// first DTLS retransmission interval, so a device retrying sees every attempt but the first
// answered from a fresh read, and a flood of one identity costs one query a second.
constexpr uint64_t kFetchCooldownMs = 1000;
// Merge holds the exclusive lock for at most this many rows at a time.
constexpr size_t kMergeChunk = 4096;

int64_t ParseInt(const std::string& text) {
  int64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

// A PostgreSQL array literal of text values: {"a","b"}, with " and \ escaped.
std::string TextArray(const std::vector<std::string>& values) {
  std::string out = "{";
  for (const std::string& v : values) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (char c : v) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

uint64_t SecondsOf(int64_t us) { return us > 0 ? static_cast<uint64_t>(us) / 1000000 : 0; }

}  // namespace

PostgresKeyStore::PostgresKeyStore(std::string dsn, uint32_t regenerate_after_s)
    : dsn_(std::move(dsn)),
      name_("postgres coapgate_bootstrap"),
      regenerate_after_s_(regenerate_after_s),
      fetch_queue_(std::make_unique<KeyFetchQueue>(kFetchCooldownMs)) {}

PostgresKeyStore::~PostgresKeyStore() { follower_.reset(); }

Result<std::unique_ptr<PostgresKeyStore>, Error> PostgresKeyStore::Open(
    const std::string& dsn, uint32_t regenerate_after_s) {
  std::unique_ptr<PostgresKeyStore> store(new PostgresKeyStore(dsn, regenerate_after_s));
  auto db = PostgresConnection::Connect(dsn);
  if (db) {
    if (auto migrated = PostgresDeviceTable::Migrate(*db); !migrated) {
      return tl::unexpected<Error>(migrated.error());
    }
    if (auto loaded = store->Fetch(*db, nullptr); !loaded) {
      return tl::unexpected<Error>(loaded.error());
    }
    store->db_ = std::make_unique<PostgresConnection>(std::move(*db));
    store->migrated_ = true;
  } else {
    // The node still starts (ingest runs from the registry's snapshot); bootstrap answers 5.03
    // and handshakes with generated keys fail until the follower has loaded the table.
    spdlog::error("bootstrap state: {}; starting without it (bootstrap answers 5.03 until the "
                  "database is back)",
                  db.error().message);
    store->unavailable_.store(true, std::memory_order_release);
  }

  PostgresKeyStore* self = store.get();
  store->follower_ = std::make_unique<PostgresChangeFollower>(
      dsn, PostgresChangeFollower::Subscription{
               kBootstrapChangesChannel, "bootstrap keys",
               [self](PostgresConnection& c, bool reconnected) -> Result<void, Error> {
                 if (reconnected) {
                   // Also the first connection when the database was away at start.
                   if (auto migrated = PostgresDeviceTable::Migrate(c); !migrated) {
                     return tl::unexpected<Error>(migrated.error());
                   }
                   if (auto loaded = self->Fetch(c, nullptr); !loaded) {
                     return tl::unexpected<Error>(loaded.error());
                   }
                   return {};
                 }
                 return c.Execute("SELECT 1", "checking the connection");
               },
               [self](PostgresConnection& c,
                      const std::vector<std::string>& iccids) -> Result<void, Error> {
                 if (auto fetched = self->Fetch(c, &iccids); !fetched) {
                   return tl::unexpected<Error>(fetched.error());
                 }
                 return {};
               },
               store->fetch_queue_->wake_fd(),
               [self](PostgresConnection& c) { return self->FetchMissed(c); }});
  store->follower_->Start();
  return store;
}

bool PostgresKeyStore::following() const noexcept {
  return follower_ != nullptr && follower_->connected();
}

Result<size_t, Error> PostgresKeyStore::Fetch(PostgresConnection& db,
                                              const std::vector<std::string>* iccids) {
  auto rows = iccids == nullptr
                  ? db.Query(kSelectAll, {}, "reading the bootstrap state")
                  : db.Query(kSelectSome, {TextArray(*iccids)}, "reading changed bootstrap keys");
  if (!rows) return tl::unexpected<Error>(rows.error());
  std::vector<Row> out;
  out.reserve(rows->size());
  size_t with_key = 0;
  for (auto& r : *rows) {
    if (r.size() != 3) continue;
    with_key += r[1].empty() ? 0 : 1;
    out.push_back(Row{std::move(r[0]), Entry{std::move(r[1]), ParseInt(r[2])}});
  }
  Merge(std::move(out));
  return with_key;
}

void PostgresKeyStore::KeyMissed(std::string_view iccid) const noexcept {
  fetch_queue_->Post(iccid, MonotonicMs());
}

Result<void, Error> PostgresKeyStore::FetchMissed(PostgresConnection& db) {
  fetch_queue_->Take(&missed_);
  if (missed_.empty()) return {};
  auto found = Fetch(db, &missed_);
  if (!found) {
    fetch_failed_.fetch_add(missed_.size(), std::memory_order_relaxed);
    return tl::unexpected<Error>(found.error());
  }
  fetched_found_.fetch_add(*found, std::memory_order_relaxed);
  fetched_absent_.fetch_add(missed_.size() - std::min(*found, missed_.size()),
                            std::memory_order_relaxed);
  return {};
}

void PostgresKeyStore::Merge(std::vector<Row> rows) {
  for (size_t at = 0; at < rows.size(); at += kMergeChunk) {
    const size_t end = std::min(rows.size(), at + kMergeChunk);
    std::unique_lock lock(map_mutex_);
    for (size_t i = at; i < end; ++i) {
      Row& row = rows[i];
      auto it = map_.find(row.iccid);
      if (it == map_.end()) {
        map_.emplace(std::move(row.iccid), std::move(row.entry));
      } else if (row.entry.last_call_us >= it->second.last_call_us) {
        it->second = std::move(row.entry);
      }
    }
  }
}

Result<PostgresConnection*, std::string> PostgresKeyStore::Connection() {
  if (db_ != nullptr && db_->ok()) return db_.get();
  db_.reset();
  const uint64_t now_ms = MonotonicMs();
  if (last_failure_ms_ != 0 && now_ms - last_failure_ms_ < kReconnectAfterMs) {
    return Fail(std::string("postgres: the database is unreachable (retrying)"));
  }
  auto db = PostgresConnection::Connect(dsn_);
  if (!db) {
    last_failure_ms_ = now_ms == 0 ? 1 : now_ms;
    return Fail(db.error().message);
  }
  last_failure_ms_ = 0;
  if (!migrated_) {
    // The database was away at start: the table may not exist yet.
    if (auto migrated = PostgresDeviceTable::Migrate(*db); !migrated) {
      return Fail(migrated.error().message);
    }
    migrated_ = true;
  }
  db_ = std::make_unique<PostgresConnection>(std::move(*db));
  spdlog::info("bootstrap state: connected to the database");
  return db_.get();
}

Result<std::string, std::string> PostgresKeyStore::Bootstrap(std::string_view iccid,
                                                             std::string_view user_psk,
                                                             uint64_t /*now_s*/) {
  if (iccid.empty()) return Fail(name_ + ": bootstrap without an ICCID");
  std::lock_guard write_lock(write_mutex_);
  auto db = Connection();
  if (!db) {
    unavailable_.store(true, std::memory_order_release);
    return Fail(std::move(db.error()));
  }

  // A failed statement: the database gone (5.03, reconnect next time) or refusing (5.00).
  auto failed = [this](const Error& error) -> tl::unexpected<std::string> {
    const bool gone = db_ == nullptr || !db_->ok();
    unavailable_.store(gone, std::memory_order_release);
    if (gone) db_.reset();
    return tl::unexpected<std::string>(error.message);
  };

  std::string key;
  Result<PostgresConnection::Rows, Error> rows = PostgresConnection::Rows{};
  if (!user_psk.empty()) {
    rows = (*db)->Query(kUserKey, {iccid}, "recording a bootstrap");
    if (!rows) return failed(rows.error());
    key = user_psk;
  } else {
    auto fresh = GenerateBootstrapKey();
    if (!fresh) return Fail(name_ + ": cannot generate a key: " + fresh.error());
    const std::string window = std::to_string(regenerate_after_s_);
    rows = (*db)->Query(kRotate, {iccid, *fresh, window}, "storing a bootstrap key");
    if (!rows) return failed(rows.error());
    if (rows->empty()) {
      rows = (*db)->Query(kTouch, {iccid}, "recording a bootstrap");
      if (!rows) return failed(rows.error());
    }
    if (rows->empty() || (*rows)[0].size() != 2 || (*rows)[0][0].empty()) {
      unavailable_.store(false, std::memory_order_release);
      return Fail(name_ + ": the bootstrap state of " + std::string(iccid) +
                  " changed under this call (a row removed by hand?)");
    }
    key = (*rows)[0][0];
  }
  if (rows->empty() || (*rows)[0].size() != 2) {
    unavailable_.store(false, std::memory_order_release);
    return Fail(name_ + ": no row returned for " + std::string(iccid));
  }
  unavailable_.store(false, std::memory_order_release);
  std::vector<Row> update;
  update.push_back(Row{std::string(iccid),
                       Entry{user_psk.empty() ? key : std::string(), ParseInt((*rows)[0][1])}});
  Merge(std::move(update));
  return key;
}

size_t PostgresKeyStore::GeneratedKey(std::string_view iccid,
                                      std::span<std::byte> out) const noexcept {
  std::shared_lock lock(map_mutex_);
  const auto it = map_.find(iccid);
  if (it == map_.end()) return 0;
  const std::string& key = it->second.generated_key;
  if (key.empty() || key.size() > out.size()) return 0;
  std::memcpy(out.data(), key.data(), key.size());
  return key.size();
}

std::optional<KeyStore::BootstrapState> PostgresKeyStore::StateOf(std::string_view iccid) const {
  std::shared_lock lock(map_mutex_);
  const auto it = map_.find(iccid);
  if (it == map_.end()) return std::nullopt;
  return BootstrapState{!it->second.generated_key.empty(), SecondsOf(it->second.last_call_us)};
}

size_t PostgresKeyStore::size() const noexcept {
  std::shared_lock lock(map_mutex_);
  return map_.size();
}

}  // namespace coapgate::registry
