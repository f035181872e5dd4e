// The PostgreSQL registry backend against a real PostgreSQL server that the test starts
// (tests/support/postgres_server.h): schema migrations, import and export, the change feed,
// the node's snapshot and its fallback when the database is away.
#include "registry/postgres_device_table.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "registry/postgres_change_follower.h"
#include "registry/postgres_device_source.h"
#include "tests/support/postgres_server.h"

namespace coapgate::registry {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kHeader = "iccid,imsi,ip,status,psk,psk_format\n";

// Started once for the binary (tests/support/postgres_server.h).
test::PostgresServer*& server = test::shared_postgres;

std::shared_ptr<const DeviceRegistry> Csv(std::string_view rows) {
  auto devices = DeviceRegistry::ParseCsv(std::string(kHeader) + std::string(rows), "test.csv");
  EXPECT_TRUE(devices) << devices.error().message;
  return devices ? *devices : nullptr;
}

class PostgresDeviceTableTest : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(server, nullptr);
    ASSERT_EQ(server->error(), "");
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    database_ = "t_" + std::string(info->name());
    for (char& c : database_) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    ASSERT_TRUE(server->CreateDatabase(database_)) << server->error();
    auto db = PostgresConnection::Connect(server->dsn(database_));
    ASSERT_TRUE(db) << db.error().message;
    db_ = std::make_unique<PostgresConnection>(std::move(*db));
    auto version = PostgresDeviceTable::Migrate(*db_);
    ASSERT_TRUE(version) << version.error().message;
    ASSERT_GE(*version, 1);
  }

  std::string Psql(const std::string& sql) { return server->Psql(database_, sql); }

  std::string database_;
  std::unique_ptr<PostgresConnection> db_;
};

TEST_F(PostgresDeviceTableTest, MigrateTwiceAppliesEachMigrationOnce) {
  auto again = PostgresDeviceTable::Migrate(*db_);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(Psql("SELECT count(*) FROM coapgate_schema_migrations"), std::to_string(*again));
}

TEST_F(PostgresDeviceTableTest, RefusesASchemaNewerThanItKnows) {
  Psql("INSERT INTO coapgate_schema_migrations (version, name) VALUES (999, 'future.sql')");
  auto version = PostgresDeviceTable::Migrate(*db_);
  ASSERT_FALSE(version);
  EXPECT_NE(version.error().message.find("schema is version 999"), std::string::npos)
      << version.error().message;
}

TEST_F(PostgresDeviceTableTest, ImportThenReadAllGivesTheSameRegistry) {
  const auto devices = Csv(
      "89882806660000000001,901405100000001,10.0.0.1,active,,\n"
      "89882806660000000002,,2001:db8::2,inactive,\"se,cret\",string\n"
      "89882806660000000003,,,active,00ff,hex\n");
  auto counts = PostgresDeviceTable::Import(*db_, *devices, /*replace=*/false);
  ASSERT_TRUE(counts) << counts.error().message;
  EXPECT_EQ(counts->rows, 3u);
  EXPECT_EQ(counts->added, 3u);
  EXPECT_EQ(counts->changed, 0u);

  auto table = PostgresDeviceTable::ReadAll(*db_);
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_GT(table->seq, 0u);
  auto read = DeviceRegistry::ParseCsv(table->csv, "table");
  ASSERT_TRUE(read) << read.error().message << "\n" << table->csv;
  ASSERT_EQ((*read)->size(), 3u);
  const auto two = (*read)->FindByIccid("89882806660000000002");
  ASSERT_TRUE(two);
  EXPECT_FALSE(two->active);
  EXPECT_EQ(two->psk, "se,cret");
  EXPECT_EQ(two->ip->ToString(), "2001:db8::2");
  const auto three = (*read)->FindByIccid("89882806660000000003");
  ASSERT_TRUE(three);
  EXPECT_FALSE(three->ip);
  EXPECT_EQ(three->psk_format, PskFormat::kHex);
  EXPECT_TRUE((*read)->FindByIp(two->ip.value()));
}

TEST_F(PostgresDeviceTableTest, ImportingTheSameFileAgainChangesNothing) {
  const auto devices = Csv("89882806660000000001,,10.0.0.1,active,,\n");
  ASSERT_TRUE(PostgresDeviceTable::Import(*db_, *devices, false));
  const std::string seq = Psql("SELECT max(seq) FROM coapgate_devices");
  auto counts = PostgresDeviceTable::Import(*db_, *devices, false);
  ASSERT_TRUE(counts) << counts.error().message;
  EXPECT_EQ(counts->added + counts->changed, 0u);
  EXPECT_EQ(Psql("SELECT max(seq) FROM coapgate_devices"), seq) << "no change, no new seq";
}

TEST_F(PostgresDeviceTableTest, ReplaceMarksMissingDevicesDeletedAndReadAllLeavesThemOut) {
  ASSERT_TRUE(PostgresDeviceTable::Import(
      *db_, *Csv("89882806660000000001,,10.0.0.1,active,,\n"
                 "89882806660000000002,,10.0.0.2,active,,\n"),
      false));
  auto counts = PostgresDeviceTable::Import(*db_, *Csv("89882806660000000002,,10.0.0.2,active,,\n"),
                                            /*replace=*/true);
  ASSERT_TRUE(counts) << counts.error().message;
  EXPECT_EQ(counts->removed, 1u);
  EXPECT_EQ(Psql("SELECT deleted FROM coapgate_devices WHERE iccid = '89882806660000000001'"), "t");
  auto table = PostgresDeviceTable::ReadAll(*db_);
  ASSERT_TRUE(table);
  auto read = DeviceRegistry::ParseCsv(table->csv, "table");
  ASSERT_TRUE(read);
  EXPECT_EQ((*read)->size(), 1u);
  // The deleted device's address is free for another one.
  ASSERT_TRUE(PostgresDeviceTable::Import(*db_, *Csv("89882806660000000003,,10.0.0.1,active,,\n"),
                                          false));
}

TEST_F(PostgresDeviceTableTest, TwoDevicesOfOneFileMayExchangeTheirAddresses) {
  ASSERT_TRUE(PostgresDeviceTable::Import(
      *db_, *Csv("89882806660000000001,,10.0.0.1,active,,\n"
                 "89882806660000000002,,10.0.0.2,active,,\n"),
      false));
  auto counts = PostgresDeviceTable::Import(*db_,
                                            *Csv("89882806660000000001,,10.0.0.2,active,,\n"
                                                 "89882806660000000002,,10.0.0.1,active,,\n"),
                                            false);
  ASSERT_TRUE(counts) << counts.error().message;
  EXPECT_EQ(Psql("SELECT host(ip) FROM coapgate_devices WHERE iccid = '89882806660000000001'"),
            "10.0.0.2");
}

TEST_F(PostgresDeviceTableTest, AnAddressHeldByADeviceOutsideTheFileIsRefusedAndNothingChanges) {
  ASSERT_TRUE(PostgresDeviceTable::Import(*db_, *Csv("89882806660000000001,,10.0.0.1,active,,\n"),
                                          false));
  auto counts = PostgresDeviceTable::Import(*db_,
                                            *Csv("89882806660000000002,,10.0.0.9,active,,\n"
                                                 "89882806660000000003,,10.0.0.1,active,,\n"),
                                            false);
  ASSERT_FALSE(counts);
  EXPECT_NE(counts.error().message.find("10.0.0.1"), std::string::npos) << counts.error().message;
  EXPECT_EQ(Psql("SELECT count(*) FROM coapgate_devices"), "1") << "atomic: nothing imported";
}

TEST_F(PostgresDeviceTableTest, RowsTheLoaderWouldRefuseCannotEnterTheTable) {
  EXPECT_EQ(Psql("INSERT INTO coapgate_devices (iccid) VALUES ('12')"), "");
  EXPECT_NE(server->error().find("coapgate_devices_iccid_check"), std::string::npos)
      << server->error();
  EXPECT_EQ(Psql("INSERT INTO coapgate_devices (iccid, psk_format) "
                 "VALUES ('89882806660000000001', 'base64')"),
            "");
  EXPECT_EQ(Psql("SELECT count(*) FROM coapgate_devices"), "0");
}

TEST_F(PostgresDeviceTableTest, DeleteIsRefusedSoThatFollowersSeeRemovals) {
  ASSERT_TRUE(PostgresDeviceTable::Import(*db_, *Csv("89882806660000000001,,10.0.0.1,active,,\n"),
                                          false));
  EXPECT_EQ(Psql("DELETE FROM coapgate_devices"), "");
  EXPECT_NE(server->error().find("set deleted = true"), std::string::npos) << server->error();
  EXPECT_EQ(Psql("SELECT count(*) FROM coapgate_devices"), "1");
}

TEST_F(PostgresDeviceTableTest, EveryChangeGetsANewSeqWhoeverMakesIt) {
  ASSERT_TRUE(PostgresDeviceTable::Import(*db_, *Csv("89882806660000000001,,10.0.0.1,active,,\n"),
                                          false));
  auto before = PostgresDeviceTable::LatestSeq(*db_);
  ASSERT_TRUE(before);
  Psql("UPDATE coapgate_devices SET status = 'inactive'");
  auto after = PostgresDeviceTable::LatestSeq(*db_);
  ASSERT_TRUE(after);
  EXPECT_GT(*after, *before);
}

// A node's view: the source loads the table and writes its snapshot; with the database away it
// starts from that snapshot and says so.
TEST_F(PostgresDeviceTableTest, SourceFallsBackToItsSnapshotWhenTheDatabaseIsAway) {
  ASSERT_TRUE(PostgresDeviceTable::Import(*db_, *Csv("89882806660000000001,,10.0.0.1,active,,\n"),
                                          false));
  const std::string snapshot = testing::TempDir() + "pg_snapshot_" + database_ + ".csv";
  std::filesystem::remove(snapshot);
  {
    PostgresDeviceSource source(server->dsn(database_), snapshot);
    auto loaded = source.Load();
    ASSERT_TRUE(loaded) << loaded.error().message;
    EXPECT_EQ(loaded->devices->size(), 1u);
    EXPECT_TRUE(source.database_reachable());
    EXPECT_GT(source.loaded_seq(), 0u);
    struct stat st;
    ASSERT_EQ(stat(snapshot.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << "the snapshot holds keys";
  }
  // A database that does not exist stands for one that is down.
  PostgresDeviceSource away(server->dsn("no_such_database"), snapshot);
  auto loaded = away.Load();
  ASSERT_TRUE(loaded) << loaded.error().message;
  EXPECT_FALSE(away.database_reachable());
  EXPECT_TRUE(loaded->devices->FindByIccid("89882806660000000001"));

  std::filesystem::remove(snapshot);
  auto nothing = away.Load();
  ASSERT_FALSE(nothing);
  EXPECT_EQ(nothing.error().kind, ErrorKind::kEnvironment);
  EXPECT_NE(nothing.error().message.find("no registry snapshot"), std::string::npos)
      << nothing.error().message;
}

TEST_F(PostgresDeviceTableTest, FollowerCallsChangedForACommittedChange) {
  std::atomic<uint64_t> loaded{0};
  std::atomic<int> changes{0};
  auto seq = PostgresDeviceTable::LatestSeq(*db_);
  ASSERT_TRUE(seq);
  loaded = *seq;
  PostgresChangeFollower follower(
      server->dsn(database_), [&] { return loaded.load(); }, [&] { changes.fetch_add(1); });
  follower.Start();
  for (int i = 0; i < 500 && !follower.connected(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(follower.connected());
  ASSERT_TRUE(PostgresDeviceTable::Import(*db_, *Csv("89882806660000000001,,10.0.0.1,active,,\n"),
                                          false));
  for (int i = 0; i < 1000 && changes.load() == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GE(changes.load(), 1) << "no change seen within 10 s";
  EXPECT_GE(follower.notifications(), 1u);
}

TEST_F(PostgresDeviceTableTest, FollowerCatchesUpWithChangesMadeWhileItWasAway) {
  ASSERT_TRUE(PostgresDeviceTable::Import(*db_, *Csv("89882806660000000001,,10.0.0.1,active,,\n"),
                                          false));
  // The node's snapshot is older than the table (loaded_seq 0): no notification will come,
  // the follower must notice on connecting.
  std::atomic<int> changes{0};
  PostgresChangeFollower follower(
      server->dsn(database_), [] { return uint64_t{0}; }, [&] { changes.fetch_add(1); });
  follower.Start();
  for (int i = 0; i < 1000 && changes.load() == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GE(changes.load(), 1);
}

}  // namespace
}  // namespace coapgate::registry
