// PostgresFirstSeen against a real PostgreSQL server that the test starts
// (tests/support/postgres_server.h): a claim wins once, a second claimant (another node's
// connection) waiting on the first gets nothing, a claim given back is won again, devices the
// table lacks are not claimed, and a re-import leaves the first registrations alone.
#include "registry/postgres_first_seen.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "registry/postgres_device_table.h"
#include "tests/support/postgres_server.h"

namespace coapgate::registry {
namespace {

constexpr std::string_view kFirst = "8988280666000000001";
constexpr std::string_view kSecond = "8988280666000000002";
constexpr std::string_view kUnknown = "8988280666000000099";

test::PostgresServer*& server = test::shared_postgres;

class PostgresFirstSeenTest : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(server, nullptr);
    ASSERT_EQ(server->error(), "");
    database_ = server->CreateTestDatabase("f");
    ASSERT_NE(database_, "") << server->error();
    // Two nodes' connections.
    a_ = Connect();
    b_ = Connect();
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    auto migrated = PostgresDeviceTable::Migrate(*a_);
    ASSERT_TRUE(migrated) << migrated.error().message;
    Import(false);
  }

  std::unique_ptr<PostgresConnection> Connect() {
    auto db = PostgresConnection::Connect(server->dsn(database_));
    EXPECT_TRUE(db) << db.error().message;
    return db ? std::make_unique<PostgresConnection>(std::move(*db)) : nullptr;
  }
  void Import(bool replace) {
    auto devices = DeviceRegistry::ParseCsv(
        "iccid,imsi,ip,status,psk,psk_format\n" + std::string(kFirst) +
            ",901405100000001,10.0.0.1,active,,\n" + std::string(kSecond) +
            ",901405100000002,10.0.0.2,active,,\n",
        "devices.csv");
    ASSERT_TRUE(devices) << devices.error().message;
    auto db = Connect();
    ASSERT_NE(db, nullptr);
    auto imported = PostgresDeviceTable::Import(*db, **devices, replace);
    ASSERT_TRUE(imported) << imported.error().message;
  }
  std::string Psql(const std::string& sql) { return server->Psql(database_, sql); }

  std::string database_;
  std::unique_ptr<PostgresConnection> a_, b_;
};

std::vector<std::string> ClaimAndCommit(PostgresConnection& db,
                                        std::vector<std::string_view> iccids) {
  auto claimed = PostgresFirstSeen::Claim(db, iccids);
  EXPECT_TRUE(claimed) << claimed.error().message;
  if (!claimed) return {};
  auto settled = PostgresFirstSeen::Settle(db, {});
  EXPECT_TRUE(settled) << settled.error().message;
  std::sort(claimed->begin(), claimed->end());
  return *claimed;
}

TEST_F(PostgresFirstSeenTest, AClaimWinsOnceAndOnlyForDevicesTheTableHas) {
  PostgresConnection* db = a_.get();
  EXPECT_EQ(ClaimAndCommit(*db, {kFirst, kUnknown}), std::vector<std::string>{std::string(kFirst)});
  EXPECT_EQ(Psql("SELECT count(*) FROM coapgate_first_seen WHERE first_seen <= now()"), "1");
  EXPECT_EQ(ClaimAndCommit(*db, {kFirst}), std::vector<std::string>{});
  EXPECT_EQ(ClaimAndCommit(*db, {kFirst, kSecond}),
            std::vector<std::string>{std::string(kSecond)});
}

TEST_F(PostgresFirstSeenTest, TwoNodesClaimingAtOnceGetEachDeviceOnce) {
  PostgresConnection* a = a_.get();
  PostgresConnection* b = b_.get();
  // A holds its claim open (publishing its events); B's claim of the same devices waits on
  // the row locks, and gets nothing once A commits.
  auto held = PostgresFirstSeen::Claim(*a, std::vector<std::string_view>{kFirst, kSecond});
  ASSERT_TRUE(held) << held.error().message;
  EXPECT_EQ(held->size(), 2u);
  std::atomic<bool> b_done{false};
  std::vector<std::string> b_claimed;
  std::thread node_b([&] {
    b_claimed = ClaimAndCommit(*b, {kSecond, kFirst});
    b_done.store(true);
  });
  // B waits on A's uncommitted rows: seen in pg_stat_activity (a bounded poll; what is
  // asserted is that B waits, not how soon).
  bool waiting = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!waiting && std::chrono::steady_clock::now() < deadline) {
    waiting = Psql("SELECT count(*) FROM pg_stat_activity WHERE datname = '" + database_ +
                   "' AND wait_event_type = 'Lock'") == "1";
    if (!waiting) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(waiting) << "node B's claim did not wait for node A's";
  EXPECT_FALSE(b_done.load());
  auto settled = PostgresFirstSeen::Settle(*a, {});
  ASSERT_TRUE(settled) << settled.error().message;
  node_b.join();
  EXPECT_TRUE(b_done.load());
  EXPECT_EQ(b_claimed, std::vector<std::string>{});
}

TEST_F(PostgresFirstSeenTest, ManyConcurrentClaimantsOneWinnerPerDevice) {
  constexpr int kNodes = 4;
  std::vector<std::unique_ptr<PostgresConnection>> nodes;
  for (int i = 0; i < kNodes; ++i) {
    nodes.push_back(Connect());
    ASSERT_NE(nodes.back(), nullptr);
  }
  std::vector<std::vector<std::string>> won(kNodes);
  std::vector<std::thread> threads;
  for (int i = 0; i < kNodes; ++i) {
    threads.emplace_back([&, i] {
      won[i] = i % 2 == 0 ? ClaimAndCommit(*nodes[i], {kFirst, kSecond})
                          : ClaimAndCommit(*nodes[i], {kSecond, kFirst});
    });
  }
  for (auto& t : threads) t.join();
  std::vector<std::string> all;
  for (const auto& w : won) all.insert(all.end(), w.begin(), w.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<std::string>{std::string(kFirst), std::string(kSecond)}))
      << "each device won by exactly one claimant";
}

TEST_F(PostgresFirstSeenTest, AClaimWhoseEventFailedIsGivenBackAndWonAgain) {
  PostgresConnection* a = a_.get();
  PostgresConnection* b = b_.get();
  auto claimed = PostgresFirstSeen::Claim(*a, std::vector<std::string_view>{kFirst, kSecond});
  ASSERT_TRUE(claimed) << claimed.error().message;
  ASSERT_EQ(claimed->size(), 2u);
  // kFirst's event reached every sink, kSecond's did not.
  auto settled = PostgresFirstSeen::Settle(*a, std::vector<std::string_view>{kSecond});
  ASSERT_TRUE(settled) << settled.error().message;
  EXPECT_EQ(Psql("SELECT string_agg(iccid, ',') FROM coapgate_first_seen"), std::string(kFirst));
  EXPECT_EQ(ClaimAndCommit(*b, {kFirst, kSecond}), std::vector<std::string>{std::string(kSecond)});

  // Aborted: as if never claimed.
  Psql("DELETE FROM coapgate_first_seen");
  auto aborted = PostgresFirstSeen::Claim(*a, std::vector<std::string_view>{kFirst});
  ASSERT_TRUE(aborted) << aborted.error().message;
  PostgresFirstSeen::Abort(*a);
  EXPECT_EQ(ClaimAndCommit(*b, {kFirst}), std::vector<std::string>{std::string(kFirst)});
}

TEST_F(PostgresFirstSeenTest, AReimportKeepsFirstRegistrationsAndReadAllListsThem) {
  PostgresConnection* db = a_.get();
  ASSERT_EQ(ClaimAndCommit(*db, {kFirst}).size(), 1u);
  Import(/*replace=*/true);
  EXPECT_EQ(ClaimAndCommit(*db, {kFirst}), std::vector<std::string>{});
  auto table = PostgresDeviceTable::ReadAll(*db);
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->registered, std::string(kFirst) + "\n");
}

}  // namespace
}  // namespace coapgate::registry
