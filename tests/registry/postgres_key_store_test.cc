// PostgresKeyStore against a real PostgreSQL server that the test starts
// (tests/support/postgres_server.h): the bootstrap rules on the database's clock, two stores
// (two nodes) on one database, concurrent bootstraps of one device, and the database away.
#include "registry/postgres_key_store.h"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>

#include "registry/generated_psk.h"
#include "registry/postgres_change_follower.h"
#include "tests/support/postgres_server.h"

namespace coapgate::registry {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kIccid = "8988280666000000001";

// Started once for the binary (tests/support/postgres_server.h).
test::PostgresServer*& server = test::shared_postgres;

std::string KeyOf(const KeyStore& store, std::string_view iccid) {
  std::array<std::byte, 64> out;
  const size_t n = store.GeneratedKey(iccid, out);
  return std::string(reinterpret_cast<const char*>(out.data()), n);
}

// Polls `condition` for at most 10 s (the wait is bounded; the assertion is on the outcome).
template <typename F>
bool Eventually(F condition) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

class PostgresKeyStoreTest : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(server, nullptr);
    ASSERT_EQ(server->error(), "");
    database_ = server->CreateTestDatabase("k");
    ASSERT_NE(database_, "") << server->error();
  }

  std::unique_ptr<PostgresKeyStore> Open(uint32_t regenerate_after_s) {
    auto store = PostgresKeyStore::Open(server->dsn(database_), regenerate_after_s);
    EXPECT_TRUE(store) << store.error().message;
    return store ? std::move(*store) : nullptr;
  }
  std::string Psql(const std::string& sql) { return server->Psql(database_, sql); }
  // A row written so that no NOTIFY announces it: what a node sees when a notification was
  // lost, or when a handshake beats the notification. Only a fetch (or a reconnect's reload)
  // brings it into memory.
  void InsertUnannounced(std::string_view iccid, std::string_view key) {
    Psql("SET session_replication_role = replica; INSERT INTO coapgate_bootstrap (iccid, key, "
         "last_call) VALUES ('" + std::string(iccid) + "', '" + std::string(key) + "', now())");
  }
  // A store whose follower is connected (and so has loaded the table).
  std::unique_ptr<PostgresKeyStore> OpenFollowing() {
    auto store = Open(300);
    if (store != nullptr) {
      EXPECT_TRUE(Eventually([&] { return store->following(); }));
    }
    return store;
  }

  std::string database_;
};

TEST_F(PostgresKeyStoreTest, GeneratesAKeyAndKeepsItWithinTheWindow) {
  auto store = Open(300);
  ASSERT_NE(store, nullptr);
  auto first = store->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(first) << first.error();
  ASSERT_EQ(first->size(), kGeneratedPskLength);
  for (char c : *first) EXPECT_NE(kGeneratedPskAlphabet.find(c), std::string_view::npos);
  EXPECT_EQ(KeyOf(*store, kIccid), *first) << "durable and in memory before Bootstrap returns";
  EXPECT_EQ(Psql("SELECT key FROM coapgate_bootstrap WHERE iccid = '" + std::string(kIccid) + "'"),
            *first);

  auto again = store->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(again) << again.error();
  EXPECT_EQ(*again, *first);
  EXPECT_EQ(store->size(), 1u);
  const auto state = store->StateOf(kIccid);
  ASSERT_TRUE(state.has_value());
  EXPECT_TRUE(state->generated_key);
  EXPECT_GT(state->last_call_s, 0u);
  EXPECT_FALSE(store->unavailable());
}

TEST_F(PostgresKeyStoreTest, EveryCallRotatesWithAZeroWindow) {
  auto store = Open(0);
  ASSERT_NE(store, nullptr);
  auto first = store->Bootstrap(kIccid, "", 0);
  auto second = store->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(first && second);
  EXPECT_NE(*first, *second);
  EXPECT_EQ(KeyOf(*store, kIccid), *second);
}

TEST_F(PostgresKeyStoreTest, RotatesOnceThePreviousCallIsOldEnoughOnTheDatabasesClock) {
  auto store = Open(60);
  ASSERT_NE(store, nullptr);
  auto first = store->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(first) << first.error();
  // The caller's clock does not count: only the database's.
  auto kept = store->Bootstrap(kIccid, "", uint64_t{1} << 40);
  ASSERT_TRUE(kept);
  EXPECT_EQ(*kept, *first);
  // The previous call, as the database records it, 61 s ago.
  Psql("UPDATE coapgate_bootstrap SET last_call = now() - interval '61 seconds'");
  auto rotated = store->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(rotated) << rotated.error();
  EXPECT_NE(*rotated, *first);
  EXPECT_EQ(KeyOf(*store, kIccid), *rotated);
  // A previous call in the future (a clock set back) counts as within the window.
  Psql("UPDATE coapgate_bootstrap SET last_call = now() + interval '1 hour'");
  auto future = store->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(future);
  EXPECT_EQ(*future, *rotated);
}

TEST_F(PostgresKeyStoreTest, AUserSetKeyIsReturnedUnchangedAndTheGeneratedOneForgotten) {
  auto store = Open(300);
  ASSERT_NE(store, nullptr);
  auto generated = store->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(generated);
  auto user = store->Bootstrap(kIccid, "my own, key", 0);
  ASSERT_TRUE(user) << user.error();
  EXPECT_EQ(*user, "my own, key");
  EXPECT_EQ(KeyOf(*store, kIccid), "");
  EXPECT_EQ(Psql("SELECT key IS NULL FROM coapgate_bootstrap"), "t");
  const auto state = store->StateOf(kIccid);
  ASSERT_TRUE(state.has_value());
  EXPECT_FALSE(state->generated_key);
  // Back to no user key: a new generated key at once (none is held).
  auto fresh = store->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->size(), kGeneratedPskLength);
}

TEST_F(PostgresKeyStoreTest, AKeyGeneratedThroughOneNodeReachesTheOthersMemory) {
  auto a = Open(300);
  auto b = Open(300);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(Eventually([&] { return b->following(); }));
  auto key = a->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(key) << key.error();
  ASSERT_TRUE(Eventually([&] { return KeyOf(*b, kIccid) == *key; }))
      << "B never saw A's key: " << KeyOf(*b, kIccid);
  // B within the window hands out A's key.
  auto on_b = b->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(on_b);
  EXPECT_EQ(*on_b, *key);
  // A rotation through B reaches A.
  Psql("UPDATE coapgate_bootstrap SET last_call = now() - interval '1 hour'");
  auto rotated = b->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(rotated);
  ASSERT_NE(*rotated, *key);
  ASSERT_TRUE(Eventually([&] { return KeyOf(*a, kIccid) == *rotated; }));
  // A store opened later loads the table whole.
  auto c = Open(300);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(KeyOf(*c, kIccid), *rotated);
}

TEST_F(PostgresKeyStoreTest, ConcurrentBootstrapsOfOneDeviceGetOneKey) {
  auto a = Open(300);
  auto b = Open(300);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  for (int round = 0; round < 40; ++round) {
    const std::string iccid = "89882806660000" + std::to_string(10000 + round);
    // Half the rounds race on a new device, half on one whose key is due for rotation.
    if (round % 2 == 1) {
      ASSERT_TRUE(a->Bootstrap(iccid, "", 0));
      Psql("UPDATE coapgate_bootstrap SET last_call = now() - interval '1 hour' WHERE iccid = '" +
           iccid + "'");
    }
    std::atomic<int> ready{0};
    Result<std::string, std::string> on_a = std::string();
    Result<std::string, std::string> on_b = std::string();
    auto run = [&](PostgresKeyStore* store, Result<std::string, std::string>* out) {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
      *out = store->Bootstrap(iccid, "", 0);
    };
    std::thread ta(run, a.get(), &on_a);
    std::thread tb(run, b.get(), &on_b);
    ta.join();
    tb.join();
    ASSERT_TRUE(on_a) << on_a.error();
    ASSERT_TRUE(on_b) << on_b.error();
    EXPECT_EQ(*on_a, *on_b) << "round " << round;
    EXPECT_EQ(Psql("SELECT key FROM coapgate_bootstrap WHERE iccid = '" + iccid + "'"), *on_a);
  }
}

TEST_F(PostgresKeyStoreTest, TheDatabaseAwayFailsBootstrapAndKeepsTheKeysInMemory) {
  auto a = Open(300);
  auto b = Open(300);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  auto key = a->Bootstrap(kIccid, "", 0);
  ASSERT_TRUE(key);
  ASSERT_TRUE(Eventually([&] { return KeyOf(*b, kIccid) == *key; }));

  ASSERT_TRUE(server->Stop()) << server->error();
  auto failed = a->Bootstrap(kIccid, "", 0);
  EXPECT_FALSE(failed);
  EXPECT_TRUE(a->unavailable());
  EXPECT_EQ(KeyOf(*a, kIccid), *key) << "handshakes go on from memory";
  EXPECT_EQ(KeyOf(*b, kIccid), *key);
  // A change made as the database comes back: B learns of it by notification or, when it had
  // not reconnected yet (usually: its backoff is 1 s), by the full reload after reconnecting.
  ASSERT_TRUE(server->Start()) << server->error();
  Psql("UPDATE coapgate_bootstrap SET key = 'ChangedWhileAway123' WHERE iccid = '" +
       std::string(kIccid) + "'");
  ASSERT_TRUE(Eventually([&] { return KeyOf(*b, kIccid) == "ChangedWhileAway123"; }))
      << "B did not catch up: " << KeyOf(*b, kIccid);
  Result<std::string, std::string> again = Fail(std::string("not tried"));
  ASSERT_TRUE(Eventually([&] {
    again = a->Bootstrap(kIccid, "", 0);
    return again.has_value();
  })) << again.error();
  EXPECT_FALSE(a->unavailable());
  EXPECT_EQ(*again, "ChangedWhileAway123");
}

TEST_F(PostgresKeyStoreTest, AMissedKeyIsFetchedForTheNextHandshake) {
  auto store = OpenFollowing();
  ASSERT_NE(store, nullptr);
  InsertUnannounced(kIccid, "MadeOnAnotherNode12");
  ASSERT_EQ(Psql("SELECT key FROM coapgate_bootstrap"), "MadeOnAnotherNode12");
  EXPECT_EQ(KeyOf(*store, kIccid), "") << "not announced, not loaded: not in memory yet";

  // The handshake that missed asks; the follower's thread fetches the row.
  store->KeyMissed(kIccid);
  ASSERT_TRUE(Eventually([&] { return KeyOf(*store, kIccid) == "MadeOnAnotherNode12"; }))
      << "the missed key was not fetched";
  EXPECT_EQ(store->fetch_queue().queued(), 1u);
  EXPECT_TRUE(Eventually([&] { return store->fetched_found() == 1; }));
  EXPECT_EQ(store->fetched_absent(), 0u);
  EXPECT_EQ(store->fetch_failed(), 0u);
  EXPECT_EQ(store->follower().notifications(), 0u) << "the row came by the fetch, not a NOTIFY";
}

TEST_F(PostgresKeyStoreTest, AMissForANeverBootstrappedDeviceCostsOneQueryPerCooldown) {
  auto store = OpenFollowing();
  ASSERT_NE(store, nullptr);
  for (int i = 0; i < 100; ++i) store->KeyMissed(kIccid);  // a device retrying, or a flood
  ASSERT_TRUE(Eventually([&] { return store->fetched_absent() == 1; }));
  EXPECT_EQ(store->fetch_queue().queued(), 1u);
  EXPECT_EQ(store->fetch_queue().suppressed(), 99u);
  EXPECT_EQ(store->fetched_found(), 0u);
  EXPECT_EQ(KeyOf(*store, kIccid), "");
  EXPECT_EQ(store->size(), 0u);
}

TEST_F(PostgresKeyStoreTest, AMissWhileTheDatabaseIsAwayWaitsForTheConnection) {
  auto store = OpenFollowing();
  ASSERT_NE(store, nullptr);
  InsertUnannounced(kIccid, "WrittenUnannounced1");
  ASSERT_TRUE(server->Stop()) << server->error();
  ASSERT_TRUE(Eventually([&] { return !store->following(); }));
  store->KeyMissed(kIccid);  // waits in the queue: there is no connection to fetch on
  EXPECT_EQ(store->fetch_failed(), 0u);
  ASSERT_TRUE(server->Start()) << server->error();
  // The reconnect's reload brings the row in; the queued fetch, run after it, finds it too.
  ASSERT_TRUE(Eventually([&] { return store->fetched_found() == 1; }));
  EXPECT_EQ(KeyOf(*store, kIccid), "WrittenUnannounced1");
  EXPECT_EQ(store->fetch_failed(), 0u);
  EXPECT_EQ(store->fetched_absent(), 0u);
}

}  // namespace
}  // namespace coapgate::registry
