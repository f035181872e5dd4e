#include "tests/support/postgres_server.h"

#include <glob.h>
#include <pwd.h>
#include <stdlib.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>

namespace coapgate::test {
namespace {

constexpr int kPort = 5432;  // names the socket file only: the server opens no TCP port

std::string FindBinDir() {
  glob_t found{};
  std::string dir;
  if (glob("/usr/lib/postgresql/*/bin/initdb", 0, nullptr, &found) == 0 && found.gl_pathc > 0) {
    dir = std::filesystem::path(found.gl_pathv[found.gl_pathc - 1]).parent_path();
  }
  globfree(&found);
  return dir;
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

PostgresServer::PostgresServer() {
  bin_dir_ = FindBinDir();
  if (bin_dir_.empty()) {
    error_ = "no /usr/lib/postgresql/*/bin/initdb (deploy/install-deps.sh installs postgresql)";
    return;
  }
  char name[] = "/tmp/coapgate-pg-XXXXXX";
  if (mkdtemp(name) == nullptr) {
    error_ = "mkdtemp failed";
    return;
  }
  dir_ = name;
  if (geteuid() == 0) {
    const passwd* pw = getpwnam("postgres");
    if (pw == nullptr || chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      error_ = "running as root needs the postgres user to own " + dir_;
      return;
    }
    as_user_ = "runuser -u postgres -- ";
  }
  if (!Run(as_user_ + bin_dir_ + "/initdb -D " + Quote(dir_ + "/data") +
           " -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync")) {
    return;
  }
  Start();
}

PostgresServer::~PostgresServer() {
  if (!dir_.empty()) {
    Run(as_user_ + bin_dir_ + "/pg_ctl -D " + Quote(dir_ + "/data") + " -m immediate stop");
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

bool PostgresServer::Start() {
  // fsync off: a test database never survives a crash of the machine, and fsync per commit
  // would make the suite wait for the disk.
  return Run(as_user_ + bin_dir_ + "/pg_ctl -D " + Quote(dir_ + "/data") + " -l " +
             Quote(dir_ + "/log") + " -w -t 60 -o " +
             Quote("-c listen_addresses='' -k " + dir_ + " -p " + std::to_string(kPort) +
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off") +
             " start");
}

bool PostgresServer::Stop() {
  return Run(as_user_ + bin_dir_ + "/pg_ctl -D " + Quote(dir_ + "/data") + " -m fast -w stop");
}

std::string PostgresServer::dsn(const std::string& database) const {
  return "host=" + dir_ + " port=" + std::to_string(kPort) + " user=postgres dbname=" + database;
}

bool PostgresServer::CreateDatabase(const std::string& name) {
  return Run(bin_dir_ + "/createdb -h " + Quote(dir_) + " -p " + std::to_string(kPort) +
             " -U postgres " + Quote(name));
}

std::string PostgresServer::CreateTestDatabase(const std::string& prefix) {
  static int run = 0;
  const auto* info = testing::UnitTest::GetInstance()->current_test_info();
  std::string name = prefix + std::to_string(run++) + "_" + std::string(info->name());
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return CreateDatabase(name) ? name : "";
}

std::string PostgresServer::Psql(const std::string& database, const std::string& sql) {
  std::string out;
  if (!Run(bin_dir_ + "/psql -X -q -t -A -v ON_ERROR_STOP=1 -d " + Quote(dsn(database)) +
               " -c " + Quote(sql),
           &out)) {
    return "";
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

bool PostgresServer::Run(const std::string& command, std::string* output) {
  error_.clear();  // the last command's: a test that expects a refusal reads it right after
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) {
    error_ = "popen failed: " + command;
    return false;
  }
  std::string text;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), p)) > 0) text.append(buffer.data(), n);
  const int status = pclose(p);
  if (output != nullptr) *output = text;
  if (status != 0) {
    error_ = command + " failed:\n" + text;
    return false;
  }
  return true;
}

PostgresServer* shared_postgres = nullptr;

namespace {

class SharedPostgresEnvironment : public testing::Environment {
 public:
  void SetUp() override { shared_postgres = new PostgresServer(); }
  void TearDown() override {
    delete shared_postgres;
    shared_postgres = nullptr;
  }
};
const auto* const shared_environment =
    testing::AddGlobalTestEnvironment(new SharedPostgresEnvironment);

}  // namespace

}  // namespace coapgate::test
