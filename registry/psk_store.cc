#include "registry/psk_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace coapgate::registry {
namespace {

// PRAGMA application_id of a coapgate state file ("cgst"): tells our file from another
// SQLite database given by mistake, which must not be converted or written to.
constexpr int32_t kApplicationId = 0x63677374;
// PRAGMA user_version. 1: table bootstrap_state as created below. A later version adds a
// migration step here; an older coapgate refuses a newer file.
constexpr int kSchemaVersion = 1;

constexpr const char* kCreateSchema =
    "BEGIN IMMEDIATE;"
    "CREATE TABLE IF NOT EXISTS bootstrap_state ("
    "  iccid TEXT PRIMARY KEY NOT NULL,"
    "  generated_psk TEXT,"            // NULL: none (never generated, or a user-set key)
    "  last_call_s INTEGER NOT NULL"   // Unix seconds of the last bootstrap call
    ") WITHOUT ROWID;"
    "PRAGMA application_id = 1667724148;"  // kApplicationId
    "PRAGMA user_version = 1;"             // kSchemaVersion
    "COMMIT;";
static_assert(kApplicationId == 1667724148);

constexpr const char* kUpsert =
    "INSERT INTO bootstrap_state (iccid, generated_psk, last_call_s) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (iccid) DO UPDATE SET generated_psk = excluded.generated_psk, "
    "last_call_s = excluded.last_call_s";

// Another process (an operator's sqlite3 shell, a backup) may hold the write lock briefly;
// waiting this long for it is better than answering 5.00 at once. Bootstrap is rare and runs
// on its own thread, so the wait blocks no datagram.
constexpr int kBusyTimeoutMs = 1000;

// The directory holding `path`, so that a newly created file's entry can be fsynced.
std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

PskStore::PskStore(std::string path, uint32_t regenerate_after_s)
    : path_(std::move(path)), regenerate_after_s_(regenerate_after_s) {}

PskStore::~PskStore() { CloseFile(); }

void PskStore::CloseFile() {
  sqlite3_finalize(upsert_);
  upsert_ = nullptr;
  sqlite3_close_v2(db_);  // the last connection checkpoints the WAL into the main file
  db_ = nullptr;
  if (file_fd_ >= 0) ::close(file_fd_);
  file_fd_ = -1;
}

Result<void, std::string> PskStore::OpenFile() {
  // Created here rather than by SQLite, whose default mode is 0644 less the umask: the file
  // holds keys. SQLite gives its -wal file the database file's mode.
  const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Fail(path_ + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Fail(path_ + ": not a regular file");
  }
  if ((st.st_mode & 077) != 0 && ::fchmod(fd, 0600) != 0) {
    const int e = errno;
    ::close(fd);
    return Fail(path_ + ": readable by others and cannot be made 0600: " + std::strerror(e));
  }
  file_fd_ = fd;
  return {};
}

bool PskStore::FileGone() const {
  struct stat held;
  struct stat named;
  if (file_fd_ < 0 || ::fstat(file_fd_, &held) != 0) return true;
  if (held.st_nlink == 0) return true;
  if (::stat(path_.c_str(), &named) != 0) return true;
  return named.st_dev != held.st_dev || named.st_ino != held.st_ino;
}

Result<void, std::string> PskStore::Recreate() {
  Map kept;
  {
    std::shared_lock lock(map_mutex_);
    kept = map_;
  }
  CloseFile();
  // Only a missing file is recreated: a file someone put in its place (a restored backup?)
  // is not overwritten, and bootstrap fails with a message until coapgate is restarted.
  struct stat st;
  if (::stat(path_.c_str(), &st) == 0) {
    return Fail(path_ + ": the state file was replaced while coapgate ran; restart coapgate to "
                        "load it (bootstrap answers 5.00 until then)");
  }
  if (auto ok = Initialize(); !ok) return ok;
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return Fail(SqliteError("cannot recreate the state"));
  }
  for (const auto& [iccid, entry] : kept) {
    const auto last = static_cast<sqlite3_int64>(std::min<uint64_t>(entry.last_call_s, INT64_MAX));
    int rc = sqlite3_bind_text(upsert_, 1, iccid.data(), static_cast<int>(iccid.size()),
                               SQLITE_STATIC);
    if (rc == SQLITE_OK) {
      rc = entry.generated_key.empty()
               ? sqlite3_bind_null(upsert_, 2)
               : sqlite3_bind_text(upsert_, 2, entry.generated_key.data(),
                                   static_cast<int>(entry.generated_key.size()), SQLITE_STATIC);
    }
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(upsert_, 3, last);
    if (rc == SQLITE_OK) rc = sqlite3_step(upsert_);
    sqlite3_reset(upsert_);
    sqlite3_clear_bindings(upsert_);
    if (rc != SQLITE_DONE) {
      std::string error = SqliteError("cannot recreate the state");
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return Fail(std::move(error));
    }
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return Fail(SqliteError("cannot recreate the state"));
  }
  std::unique_lock lock(map_mutex_);
  map_ = std::move(kept);
  return {};
}

Result<void, std::string> PskStore::Release() {
  std::lock_guard write_lock(write_mutex_);
  CloseFile();
  released_ = true;
  return {};
}

Result<void, std::string> PskStore::Reacquire() {
  std::lock_guard write_lock(write_mutex_);
  if (!released_) return {};
  if (auto ok = Initialize(/*load=*/false); !ok) {
    CloseFile();
    return ok;
  }
  released_ = false;
  return {};
}

Result<std::unique_ptr<PskStore>, std::string> PskStore::Open(const std::string& path,
                                                              uint32_t regenerate_after_s) {
  std::unique_ptr<PskStore> store(new PskStore(path, regenerate_after_s));
  if (auto ok = store->Initialize(); !ok) return Fail(std::move(ok.error()));
  return store;
}

std::string PskStore::SqliteError(std::string_view what) const {
  std::string message = path_ + ": " + std::string(what) + ": ";
  message += db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory";
  if (db_ != nullptr) {
    if (const int e = sqlite3_system_errno(db_); e != 0) {
      message += std::string(" (") + std::strerror(e) + ")";
    }
  }
  return message;
}

Result<void, std::string> PskStore::Initialize(bool load) {
  if (auto ok = OpenFile(); !ok) return ok;
  if (sqlite3_open_v2(path_.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    return Fail(SqliteError("cannot open"));
  }
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  // Exclusive locking mode before the first access: SQLite then keeps the WAL index in heap
  // memory instead of mapping a -shm file (one another process could truncate or make
  // unwritable: a SIGBUS that would stop all ingest), and holds the file's lock until close,
  // so a second coapgate given the same state file fails here instead of sharing it.
  if (sqlite3_exec(db_, "PRAGMA locking_mode=EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return Fail(SqliteError("cannot set exclusive locking"));
  }
  if (const int rc = sqlite3_exec(db_, "BEGIN EXCLUSIVE; COMMIT;", nullptr, nullptr, nullptr);
      rc != SQLITE_OK) {
    if ((rc & 0xff) == SQLITE_BUSY) {
      return Fail(path_ + ": in use by another process (another coapgate with the same "
                          "devices.state?); each instance needs its own state file");
    }
    return Fail(SqliteError("cannot lock"));
  }

  // One integer from a PRAGMA or a query; false (with the error in *error) on failure.
  auto query_int = [this](const char* sql, int64_t* value, std::string* error) {
    sqlite3_stmt* stmt = nullptr;
    bool ok = sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) == SQLITE_OK &&
              sqlite3_step(stmt) == SQLITE_ROW;
    if (ok) *value = sqlite3_column_int64(stmt, 0);
    if (!ok) *error = SqliteError(std::string("cannot read (") + sql + ")");
    sqlite3_finalize(stmt);
    return ok;
  };

  // Identify the file before changing anything in it.
  std::string error;
  int64_t application_id = 0;
  int64_t version = 0;
  if (!query_int("PRAGMA application_id", &application_id, &error) ||
      !query_int("PRAGMA user_version", &version, &error)) {
    return Fail(error);
  }
  bool fresh = false;
  if (application_id == 0 && version == 0) {
    int64_t objects = 0;
    if (!query_int("SELECT count(*) FROM sqlite_master", &objects, &error)) return Fail(error);
    if (objects != 0) {
      return Fail(path_ + ": not a coapgate state file (an SQLite database of something else)");
    }
    fresh = true;
  } else if (application_id != kApplicationId) {
    return Fail(path_ + ": not a coapgate state file (application_id " +
                std::to_string(application_id) + ")");
  } else if (version != kSchemaVersion) {
    return Fail(path_ + ": state file schema version " + std::to_string(version) +
                (version > kSchemaVersion ? " is newer than" : " is unknown to") +
                " this coapgate (version " + std::to_string(kSchemaVersion) + ")");
  }

  // WAL: a commit appends to the log and fsyncs it once (synchronous=FULL), and readers such
  // as a backup never block the writer. journal_mode answers with the mode now in effect,
  // which stays "delete" on file systems without shared memory support.
  {
    sqlite3_stmt* stmt = nullptr;
    bool wal = sqlite3_prepare_v2(db_, "PRAGMA journal_mode=WAL", -1, &stmt, nullptr) ==
                   SQLITE_OK &&
               sqlite3_step(stmt) == SQLITE_ROW;
    const auto* mode = wal ? sqlite3_column_text(stmt, 0) : nullptr;
    const std::string mode_text = mode != nullptr ? reinterpret_cast<const char*>(mode) : "";
    if (!wal) error = SqliteError("cannot enable WAL");
    sqlite3_finalize(stmt);
    if (!wal) return Fail(error);
    if (mode_text != "wal") {
      return Fail(path_ + ": cannot enable WAL (journal mode stays \"" + mode_text + "\")");
    }
  }
  if (sqlite3_exec(db_, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return Fail(SqliteError("cannot set synchronous=FULL"));
  }

  if (fresh) {
    if (sqlite3_exec(db_, kCreateSchema, nullptr, nullptr, nullptr) != SQLITE_OK) {
      error = SqliteError("cannot create the schema");
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return Fail(error);
    }
    // SQLite fsyncs the directory for the journal files it creates, not for the database
    // file itself: make the new file's name as durable as its contents.
    const std::string directory = DirectoryOf(path_);
    const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) {
      const int e = errno;
      if (fd >= 0) ::close(fd);
      return Fail(path_ + ": cannot fsync directory " + directory + ": " + std::strerror(e));
    }
    ::close(fd);
  }

  if (sqlite3_prepare_v3(db_, kUpsert, -1, SQLITE_PREPARE_PERSISTENT, &upsert_, nullptr) !=
      SQLITE_OK) {
    return Fail(SqliteError("cannot prepare the update statement"));
  }

  if (!load) return {};
  // Load every device's state; the map is the only thing Bootstrap and GeneratedKey read.
  sqlite3_stmt* select = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT iccid, generated_psk, last_call_s FROM bootstrap_state",
                         -1, &select, nullptr) != SQLITE_OK) {
    return Fail(SqliteError("cannot read the state"));
  }
  int rc;
  while ((rc = sqlite3_step(select)) == SQLITE_ROW) {
    const auto* iccid = reinterpret_cast<const char*>(sqlite3_column_text(select, 0));
    const auto* key = reinterpret_cast<const char*>(sqlite3_column_text(select, 1));
    const int64_t last_call_s = sqlite3_column_int64(select, 2);
    if (iccid == nullptr) continue;  // NOT NULL in the schema; only a hand-edited file
    Entry& entry = map_[iccid];
    entry.generated_key = key != nullptr ? key : "";
    entry.last_call_s = last_call_s > 0 ? static_cast<uint64_t>(last_call_s) : 0;
  }
  sqlite3_finalize(select);
  if (rc != SQLITE_DONE) return Fail(SqliteError("cannot read the state"));
  return {};
}

Result<std::string, std::string> PskStore::Bootstrap(std::string_view iccid,
                                                     std::string_view user_psk,
                                                     uint64_t now_s) {
  if (iccid.empty()) return Fail(path_ + ": bootstrap without an ICCID");
  std::lock_guard write_lock(write_mutex_);
  if (released_) return Fail(path_ + ": handed over to a successor process");
  if (FileGone()) {
    // Answering from memory would hand out keys that are gone after a restart.
    if (auto ok = Recreate(); !ok) return Fail(std::move(ok.error()));
    spdlog::error("{}: the state file was deleted while coapgate ran; recreated it from memory "
                  "({} devices)", path_, map_.size());
  }

  // Reading map_ without map_mutex_ is safe here: only a holder of write_mutex_ changes it.
  const auto it = map_.find(iccid);
  std::string key;
  std::string generated;  // what the row will hold; empty = NULL
  if (!user_psk.empty()) {
    key = user_psk;
  } else if (it == map_.end() || it->second.generated_key.empty() ||
             (now_s > it->second.last_call_s ? now_s - it->second.last_call_s : 0) >=
                 regenerate_after_s_) {
    auto fresh = GenerateBootstrapKey();
    if (!fresh) return Fail(path_ + ": cannot generate a key: " + fresh.error());
    key = *fresh;
    generated = key;
  } else {
    key = it->second.generated_key;
    generated = key;
  }

  // SQLite keeps integers signed; a time past 2^63 s cannot occur, clamp rather than wrap.
  const auto stored_now = static_cast<sqlite3_int64>(std::min<uint64_t>(now_s, INT64_MAX));
  int rc = sqlite3_bind_text(upsert_, 1, iccid.data(), static_cast<int>(iccid.size()),
                             SQLITE_STATIC);
  if (rc == SQLITE_OK) {
    rc = generated.empty()
             ? sqlite3_bind_null(upsert_, 2)
             : sqlite3_bind_text(upsert_, 2, generated.data(),
                                 static_cast<int>(generated.size()), SQLITE_STATIC);
  }
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(upsert_, 3, stored_now);
  // Autocommit: the single statement is its own transaction, committed (WAL appended and
  // fsynced, synchronous=FULL) before sqlite3_step returns SQLITE_DONE.
  if (rc == SQLITE_OK) rc = sqlite3_step(upsert_);
  std::string error;
  if (rc != SQLITE_DONE) error = SqliteError("cannot store the bootstrap of " + std::string(iccid));
  sqlite3_reset(upsert_);
  sqlite3_clear_bindings(upsert_);
  if (rc != SQLITE_DONE) return Fail(std::move(error));

  {
    std::unique_lock map_lock(map_mutex_);
    if (it != map_.end()) {
      it->second.generated_key = std::move(generated);
      it->second.last_call_s = now_s;
    } else {
      map_.emplace(std::string(iccid), Entry{std::move(generated), now_s});
    }
  }
  return key;
}

bool PskStore::GeneratedKey(std::string_view iccid, std::string* key) const {
  std::shared_lock lock(map_mutex_);
  const auto it = map_.find(iccid);
  if (it == map_.end() || it->second.generated_key.empty()) return false;
  *key = it->second.generated_key;
  return true;
}

std::optional<PskStore::BootstrapState> PskStore::StateOf(std::string_view iccid) const {
  std::shared_lock lock(map_mutex_);
  const auto it = map_.find(iccid);
  if (it == map_.end()) return std::nullopt;
  return BootstrapState{!it->second.generated_key.empty(), it->second.last_call_s};
}

size_t PskStore::GeneratedKey(std::string_view iccid, std::span<std::byte> out) const noexcept {
  std::shared_lock lock(map_mutex_);
  const auto it = map_.find(iccid);
  if (it == map_.end()) return 0;
  const std::string& key = it->second.generated_key;
  if (key.empty() || key.size() > out.size()) return 0;
  std::memcpy(out.data(), key.data(), key.size());
  return key.size();
}

size_t PskStore::size() const noexcept {
  std::shared_lock lock(map_mutex_);
  return map_.size();
}

}  // namespace coapgate::registry
