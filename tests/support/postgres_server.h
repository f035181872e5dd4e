// Test helper: a throwaway PostgreSQL server for one test binary. initdb into a temporary
// directory (as the `postgres` user when the test runs as root: PostgreSQL refuses to run as
// root), started with pg_ctl listening on a Unix socket in that directory only — no TCP port,
// nothing reachable from outside the machine. Stop/Start let a test take the database away
// and bring it back; the destructor stops it and removes the directory.
//
// Thread contract: one test thread.
#pragma once

#include <string>

namespace coapgate::test {

class PostgresServer {
 public:
  PostgresServer();  // initdb + start; a failure shows in error()
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // What the last command got wrong (the command and its output), or empty.
  [[nodiscard]] const std::string& error() const { return error_; }

  // libpq connection string for `database` (created on first use by CreateDatabase).
  [[nodiscard]] std::string dsn(const std::string& database = "postgres") const;
  // A fresh, empty database: tests that need a table of their own.
  [[nodiscard]] bool CreateDatabase(const std::string& name);
  // A fresh database for the running GoogleTest test: named `prefix`, a run number (so that
  // --gtest_repeat gets a new one each time) and the test's name, lowercased. "" on failure
  // (error() says why).
  [[nodiscard]] std::string CreateTestDatabase(const std::string& prefix);
  // Runs SQL with psql against `database`; its output (tuples only, unaligned), or "" with
  // error() set on failure.
  std::string Psql(const std::string& database, const std::string& sql);

  bool Stop();   // pg_ctl stop -m fast
  bool Start();  // pg_ctl start -w

 private:
  bool Run(const std::string& command, std::string* output = nullptr);

  std::string dir_;       // the cluster: data/ and the socket
  std::string bin_dir_;   // /usr/lib/postgresql/<version>/bin
  std::string as_user_;   // "runuser -u postgres -- " when root, else ""
  std::string error_;
};

// The test binary's one server: started before its first test and stopped after its last (a
// GoogleTest global environment that linking this file registers); null outside that span.
extern PostgresServer* shared_postgres;

}  // namespace coapgate::test
