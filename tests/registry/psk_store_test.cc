#include "registry/psk_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace coapgate::registry {
namespace {

constexpr uint32_t kWindow = 300;

// A state file path of this test's own in TempDir(), removed (with its WAL and shared-memory
// files) before and after.
class StateFile {
 public:
  StateFile() {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    path_ = testing::TempDir() + "psk_store_" + info->name() + "_" + std::to_string(getpid()) +
            ".db";
    Remove();
  }
  ~StateFile() { Remove(); }
  StateFile(const StateFile&) = delete;
  StateFile& operator=(const StateFile&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  void Remove() const {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
      std::remove((path_ + suffix).c_str());
    }
  }
  std::string path_;
};

std::unique_ptr<PskStore> OpenStore(const std::string& path, uint32_t window = kWindow) {
  auto store = PskStore::Open(path, window);
  if (!store) {
    ADD_FAILURE() << store.error();
    return nullptr;
  }
  return std::move(*store);
}

std::string MustBootstrap(PskStore& store, std::string_view iccid, std::string_view user_psk,
                          uint64_t now_s) {
  auto key = store.Bootstrap(iccid, user_psk, now_s);
  if (!key) {
    ADD_FAILURE() << key.error();
    return {};
  }
  return *key;
}

std::string Generated(const PskStore& store, std::string_view iccid) {
  std::string key;
  return store.GeneratedKey(iccid, &key) ? key : "<none>";
}

// The shape every generated key must have (docs/bootstrap-and-dtls.md, reference §3.2).
::testing::AssertionResult IsGeneratedKey(const std::string& key) {
  if (key.size() != kGeneratedPskLength) {
    return ::testing::AssertionFailure() << '"' << key << "\" has " << key.size() << " chars";
  }
  for (char c : key) {
    if (kGeneratedPskAlphabet.find(c) == std::string_view::npos || c == ',' || c == ' ' ||
        c == '"' || c == '\'' || c < 0x21 || c > 0x7e) {
      return ::testing::AssertionFailure() << '"' << key << "\" has '" << c << "'";
    }
  }
  return ::testing::AssertionSuccess();
}

// Runs one statement on the file through a connection of its own (as an operator's tool
// would); the connection is closed afterwards.
void ExecOnFile(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, &error), SQLITE_OK)
      << (error != nullptr ? error : "");
  sqlite3_free(error);
  sqlite3_close(db);
}

constexpr std::string_view kIccid = "8988280666000002864";
constexpr std::string_view kOtherIccid = "8988228066601892721";

TEST(PskStore, FirstCallGeneratesAKeyOfTheDocumentedShape) {
  StateFile file;
  auto store = OpenStore(file.path());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->size(), 0u);
  EXPECT_EQ(Generated(*store, kIccid), "<none>");

  const std::string key = MustBootstrap(*store, kIccid, "", 1'700'000'000);
  EXPECT_TRUE(IsGeneratedKey(key));
  EXPECT_EQ(key.find(','), std::string::npos);
  EXPECT_EQ(Generated(*store, kIccid), key);
  EXPECT_EQ(store->size(), 1u);
}

TEST(PskStore, SameKeyWithinTheWindowCountedFromThePreviousCall) {
  StateFile file;
  auto store = OpenStore(file.path());
  ASSERT_NE(store, nullptr);
  const std::string key = MustBootstrap(*store, kIccid, "", 1000);
  EXPECT_EQ(MustBootstrap(*store, kIccid, "", 1000), key);
  EXPECT_EQ(MustBootstrap(*store, kIccid, "", 1000 + kWindow - 1), key);
  // 598 s after the key was made but 299 s after the previous call: still the same key,
  // because every call records its time.
  EXPECT_EQ(MustBootstrap(*store, kIccid, "", 1000 + 2 * (kWindow - 1)), key);
  EXPECT_EQ(Generated(*store, kIccid), key);
}

TEST(PskStore, NewKeyOnceTheWindowHasPassed) {
  StateFile file;
  auto store = OpenStore(file.path());
  ASSERT_NE(store, nullptr);
  const std::string first = MustBootstrap(*store, kIccid, "", 1000);
  const std::string second = MustBootstrap(*store, kIccid, "", 1000 + kWindow);
  EXPECT_TRUE(IsGeneratedKey(second));
  EXPECT_NE(second, first);
  EXPECT_EQ(Generated(*store, kIccid), second);
  const std::string third = MustBootstrap(*store, kIccid, "", 1000 + kWindow + 10 * kWindow);
  EXPECT_NE(third, second);
  EXPECT_EQ(Generated(*store, kIccid), third);
}

TEST(PskStore, WindowZeroRegeneratesOnEveryCall) {
  StateFile file;
  auto store = OpenStore(file.path(), /*window=*/0);
  ASSERT_NE(store, nullptr);
  const std::string first = MustBootstrap(*store, kIccid, "", 1000);
  EXPECT_NE(MustBootstrap(*store, kIccid, "", 1000), first);
}

TEST(PskStore, ClockGoingBackwardsKeepsTheKey) {
  StateFile file;
  auto store = OpenStore(file.path());
  ASSERT_NE(store, nullptr);
  const std::string key = MustBootstrap(*store, kIccid, "", 10'000);
  EXPECT_EQ(MustBootstrap(*store, kIccid, "", 5'000), key);
  // The call at 5000 was recorded: the window now counts from there.
  EXPECT_EQ(MustBootstrap(*store, kIccid, "", 5'000 + kWindow - 1), key);
  EXPECT_NE(MustBootstrap(*store, kIccid, "", 5'000 + kWindow - 1 + kWindow), key);
}

TEST(PskStore, UserSetKeyIsReturnedAsIsAndNeverRegenerated) {
  StateFile file;
  auto store = OpenStore(file.path());
  ASSERT_NE(store, nullptr);
  constexpr std::string_view kUserKey = "my user key, 8..64";  // not ours to judge
  EXPECT_EQ(MustBootstrap(*store, kIccid, kUserKey, 1000), kUserKey);
  EXPECT_EQ(MustBootstrap(*store, kIccid, kUserKey, 1000 + kWindow), kUserKey);
  EXPECT_EQ(MustBootstrap(*store, kIccid, kUserKey, 1000 + 1000 * kWindow), kUserKey);
  EXPECT_EQ(Generated(*store, kIccid), "<none>");
  EXPECT_EQ(store->size(), 1u);  // the call time is recorded all the same
}

TEST(PskStore, UserSetKeyRetiresTheGeneratedOne) {
  StateFile file;
  auto store = OpenStore(file.path());
  ASSERT_NE(store, nullptr);
  const std::string generated = MustBootstrap(*store, kIccid, "", 1000);
  EXPECT_EQ(MustBootstrap(*store, kIccid, "user-key-0001", 1010), "user-key-0001");
  EXPECT_EQ(Generated(*store, kIccid), "<none>");
  // The operator removes the user key again: the device has no generated key any more, so it
  // gets a fresh one even within the window.
  const std::string fresh = MustBootstrap(*store, kIccid, "", 1020);
  EXPECT_TRUE(IsGeneratedKey(fresh));
  EXPECT_NE(fresh, generated);
  EXPECT_EQ(Generated(*store, kIccid), fresh);
}

TEST(PskStore, KeysDifferAcrossDevices) {
  StateFile file;
  auto store = OpenStore(file.path());
  ASSERT_NE(store, nullptr);
  std::set<std::string> keys;
  constexpr int kDevices = 64;
  for (int i = 0; i < kDevices; ++i) {
    const std::string iccid = "89882806660000" + std::to_string(10000 + i);
    const std::string key = MustBootstrap(*store, iccid, "", 1000);
    EXPECT_TRUE(IsGeneratedKey(key));
    keys.insert(key);
  }
  EXPECT_EQ(keys.size(), size_t{kDevices});
  EXPECT_EQ(store->size(), size_t{kDevices});
}

TEST(PskStore, KeyAndCallTimeSurviveReopen) {
  StateFile file;
  std::string key;
  {
    auto store = OpenStore(file.path());
    ASSERT_NE(store, nullptr);
    key = MustBootstrap(*store, kIccid, "", 1000);
    EXPECT_EQ(MustBootstrap(*store, kOtherIccid, "user-key-0001", 1000), "user-key-0001");
  }
  {
    auto store = OpenStore(file.path());
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->size(), 2u);
    EXPECT_EQ(Generated(*store, kIccid), key);
    EXPECT_EQ(Generated(*store, kOtherIccid), "<none>");
    // The call time came back too: 299 s after it the key stays...
    EXPECT_EQ(MustBootstrap(*store, kIccid, "", 1000 + kWindow - 1), key);
  }
  {
    auto store = OpenStore(file.path());
    ASSERT_NE(store, nullptr);
    // ...and that call's time was stored: 299 s after it, still the same key.
    EXPECT_EQ(MustBootstrap(*store, kIccid, "", 1000 + 2 * (kWindow - 1)), key);
    EXPECT_NE(MustBootstrap(*store, kIccid, "", 1000 + 2 * (kWindow - 1) + kWindow), key);
  }
}

TEST(PskStore, GeneratedKeySeesEachNewKeyAsSoonAsBootstrapReturns) {
  StateFile file;
  auto store = OpenStore(file.path(), /*window=*/1);
  ASSERT_NE(store, nullptr);
  for (uint64_t t = 1; t <= 10; ++t) {
    const std::string key = MustBootstrap(*store, kIccid, "", t);
    EXPECT_EQ(Generated(*store, kIccid), key);
  }
}

// Shards read keys while the bootstrap worker writes them. Run under TSan (tsan preset).
TEST(PskStore, ConcurrentReadersWhileBootstrapWrites) {
  StateFile file;
  auto store = OpenStore(file.path(), /*window=*/1);
  ASSERT_NE(store, nullptr);
  const std::vector<std::string> iccids = {std::string(kIccid), std::string(kOtherIccid),
                                           "8988280666000000001"};
  std::atomic<bool> done{false};
  std::atomic<uint64_t> bad{0};
  std::atomic<uint64_t> seen{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      std::string key;
      while (!done.load(std::memory_order_acquire)) {
        for (const std::string& iccid : iccids) {
          if (store->GeneratedKey(iccid, &key)) {
            seen.fetch_add(1, std::memory_order_relaxed);
            if (!IsGeneratedKey(key)) bad.fetch_add(1, std::memory_order_relaxed);
          }
          (void)store->size();
        }
      }
    });
  }
  for (uint64_t t = 1; t <= 30; ++t) {
    for (const std::string& iccid : iccids) {
      const std::string key = MustBootstrap(*store, iccid, "", t * 2);
      EXPECT_EQ(Generated(*store, iccid), key);
    }
  }
  // Every key exists now, so each reader's next pass sees some: wait (bounded) for one, so the
  // test proves the readers actually read while the writer ran rather than passing vacuously.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (seen.load(std::memory_order_relaxed) == 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::yield();
  }
  done.store(true, std::memory_order_release);
  for (auto& t : readers) t.join();
  EXPECT_GT(seen.load(), 0u) << "no reader saw a generated key within 30 s";
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_EQ(store->size(), iccids.size());
}

TEST(PskStore, FileIsInWalMode) {
  StateFile file;
  auto store = OpenStore(file.path());
  ASSERT_NE(store, nullptr);
  (void)MustBootstrap(*store, kIccid, "", 1000);
  store.reset();  // the store holds the file exclusively while open
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(file.path().c_str(), &other), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(other, "PRAGMA journal_mode", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)), "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(other);
}

TEST(PskStore, UnwritablePathIsAnErrorNamingIt) {
  const std::string path = testing::TempDir() + "no-such-directory-" +
                           std::to_string(getpid()) + "/state.db";
  auto store = PskStore::Open(path, kWindow);
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().find(path), std::string::npos) << store.error();
}

TEST(PskStore, RefusesAFileThatIsNotADatabase) {
  StateFile file;
  std::ofstream(file.path()) << "iccid,imsi,ip,status,psk,psk_format\n"
                                "8988280666000002864,901405100002864,10.0.0.1,active,,\n";
  auto store = PskStore::Open(file.path(), kWindow);
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().find(file.path()), std::string::npos) << store.error();
}

TEST(PskStore, RefusesAnotherApplicationsDatabase) {
  StateFile file;
  ExecOnFile(file.path(), "CREATE TABLE customers (name TEXT)");
  auto store = PskStore::Open(file.path(), kWindow);
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().find(file.path()), std::string::npos) << store.error();
  EXPECT_NE(store.error().find("not a coapgate state file"), std::string::npos) << store.error();
}

TEST(PskStore, RefusesANewerSchemaVersion) {
  StateFile file;
  ASSERT_NE(OpenStore(file.path()), nullptr);
  ExecOnFile(file.path(), "PRAGMA user_version = 2");
  auto store = PskStore::Open(file.path(), kWindow);
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().find("newer"), std::string::npos) << store.error();
}

TEST(PskStore, SqliteFailureIsAnErrorAndChangesNothing) {
  StateFile file;
  auto store = OpenStore(file.path(), /*window=*/0);
  ASSERT_NE(store, nullptr);
  const std::string key = MustBootstrap(*store, kIccid, "", 1000);

  // Another file renamed over the state file: the store cannot write its state anywhere it
  // would be found after a restart, so the bootstrap fails.
  const std::string stranger = file.path() + ".stranger";
  std::ofstream(stranger) << "not ours\n";
  ASSERT_EQ(std::rename(stranger.c_str(), file.path().c_str()), 0);
  auto failed = store->Bootstrap(kIccid, "", 2000);
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().find(file.path()), std::string::npos) << failed.error();
  EXPECT_NE(failed.error().find("replaced"), std::string::npos) << failed.error();
  EXPECT_EQ(Generated(*store, kIccid), key);  // the would-be new key was never handed out

  // Once the stranger is gone, the state is recreated from memory and bootstrap goes on.
  ASSERT_EQ(std::remove(file.path().c_str()), 0);
  const std::string next = MustBootstrap(*store, kIccid, "", 2000);
  EXPECT_NE(next, key);
  EXPECT_EQ(Generated(*store, kIccid), next);
}

TEST(PskStore, StateFileAndWalAreReadableByTheOwnerOnlyAndNoShmIsMapped) {
  StateFile file;
  std::ofstream(file.path()).flush();  // created 0644 (umask 022) before coapgate opens it
  ASSERT_EQ(::chmod(file.path().c_str(), 0644), 0);
  auto store = OpenStore(file.path());
  ASSERT_NE(store, nullptr);
  (void)MustBootstrap(*store, kIccid, "", 1000);
  struct stat st;
  ASSERT_EQ(::stat(file.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((file.path() + "-wal").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 077, 0u);
  EXPECT_NE(::stat((file.path() + "-shm").c_str(), &st), 0);  // exclusive mode: heap WAL index
}

TEST(PskStore, ASecondStoreOnTheSameFileIsRefused) {
  StateFile file;
  auto first = OpenStore(file.path());
  ASSERT_NE(first, nullptr);
  auto second = PskStore::Open(file.path(), kWindow);
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().find("in use by another process"), std::string::npos)
      << second.error();
}

// The take-over: the old process releases the file, a successor opens it (and sees every
// key); the old one still answers handshakes from memory but no longer bootstraps. When the
// successor is gone, the old one takes the file back and bootstraps again.
TEST(PskStore, ReleasedFileOpensInASuccessorAndIsReacquiredAfterIt) {
  StateFile file;
  auto store = OpenStore(file.path());
  ASSERT_NE(store, nullptr);
  const std::string key = MustBootstrap(*store, kIccid, "", 1000);
  ASSERT_TRUE(store->Release());
  EXPECT_EQ(Generated(*store, kIccid), key);
  auto refused = store->Bootstrap(kOtherIccid, "", 1000);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().find("handed over"), std::string::npos) << refused.error();
  {
    auto successor = OpenStore(file.path());
    ASSERT_NE(successor, nullptr);
    EXPECT_EQ(Generated(*successor, kIccid), key);
    auto while_held = store->Reacquire();
    ASSERT_FALSE(while_held);  // the successor holds the lock
    EXPECT_NE(while_held.error().find("in use by another process"), std::string::npos)
        << while_held.error();
  }
  ASSERT_TRUE(store->Reacquire());
  EXPECT_EQ(MustBootstrap(*store, kIccid, "", 1001), key);
  (void)MustBootstrap(*store, kOtherIccid, "", 1001);
  EXPECT_EQ(store->size(), 2u);
}

TEST(PskStore, DeletedStateFileIsRecreatedFromMemoryBeforeTheNextBootstrap) {
  StateFile file;
  std::string first_key;
  {
    auto store = OpenStore(file.path());
    ASSERT_NE(store, nullptr);
    first_key = MustBootstrap(*store, kIccid, "", 1000);
    ASSERT_EQ(std::remove(file.path().c_str()), 0);
    std::remove((file.path() + "-wal").c_str());
    (void)MustBootstrap(*store, "8988280666000000002", "", 1000);
    struct stat st;
    ASSERT_EQ(::stat(file.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  // After a restart both devices' keys are still there: nothing lived in memory only.
  auto reopened = OpenStore(file.path());
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(reopened->size(), 2u);
  EXPECT_EQ(Generated(*reopened, kIccid), first_key);
}

TEST(PskStore, EmptyIccidIsAnError) {
  StateFile file;
  auto store = OpenStore(file.path());
  ASSERT_NE(store, nullptr);
  EXPECT_FALSE(store->Bootstrap("", "", 1000));
  EXPECT_EQ(store->size(), 0u);
}

}  // namespace
}  // namespace coapgate::registry
