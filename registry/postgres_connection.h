// PostgresConnection: one libpq connection to the shared registry database, for the control
// plane only (start-up, reloads, the change follower, the `coapgate devices` commands). The
// shards never touch it: they read registry snapshots.
//
// Thread contract: one thread at a time uses a connection (libpq's own rule). Moving it hands
// it to another thread.
//
// Passwords: coapgate never takes one itself. libpq reads it from the DSN's `passfile` (a
// pgpass file, 0600), from PGPASSFILE / PGPASSWORD in the environment, or from ~/.pgpass, so
// the TOML file only names the database. Error messages never repeat the DSN (it may hold a
// password); they say "postgres:" and libpq's one-line reason.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/result.h"

struct pg_conn;

namespace coapgate::registry {

class PostgresConnection {
 public:
  // Connects, with a 5 s connect timeout and application_name=coapgate unless the DSN says
  // otherwise. Failure is kEnvironment (the database is down, refuses us, or is unknown).
  [[nodiscard]] static Result<PostgresConnection, Error> Connect(const std::string& dsn);

  PostgresConnection(PostgresConnection&& other) noexcept;
  PostgresConnection& operator=(PostgresConnection&& other) noexcept;
  PostgresConnection(const PostgresConnection&) = delete;
  PostgresConnection& operator=(const PostgresConnection&) = delete;
  ~PostgresConnection();

  // Runs one or more statements without parameters (PQexec). `what` names the step in errors:
  // "postgres: WHAT: reason".
  [[nodiscard]] Result<void, Error> Execute(std::string_view sql, std::string_view what);
  // The first column of the first row of a query, as text ("" for NULL or no row).
  [[nodiscard]] Result<std::string, Error> QueryValue(std::string_view sql,
                                                      std::string_view what);
  // A query with text parameters ($1, $2, ...; PQexecParams, so values are never quoted into
  // the SQL): every row, each its columns as text (NULL as ""). A statement without a result
  // set (an UPDATE without RETURNING) gives no rows.
  using Rows = std::vector<std::vector<std::string>>;
  [[nodiscard]] Result<Rows, Error> Query(std::string_view sql,
                                          std::initializer_list<std::string_view> params,
                                          std::string_view what);
  // `COPY ... TO STDOUT`: everything the server sends, concatenated.
  [[nodiscard]] Result<std::string, Error> CopyOut(std::string_view copy_sql,
                                                   std::string_view what);
  // `COPY ... FROM STDIN` with `data` as the input.
  [[nodiscard]] Result<void, Error> CopyIn(std::string_view copy_sql, std::string_view data,
                                           std::string_view what);

  // The connection is still good (false after the server went away); a broken one is dropped
  // and connected again by its owner.
  [[nodiscard]] bool ok() const noexcept;
  // The socket to wait on for notifications (LISTEN), or -1.
  [[nodiscard]] int socket() const noexcept;
  // Reads what arrived on the socket; true with the payload of the next notification of any
  // channel this connection LISTENs to, false when there is none. Never blocks.
  [[nodiscard]] Result<bool, Error> NextNotification(std::string* payload);

 private:
  explicit PostgresConnection(pg_conn* conn) : conn_(conn) {}
  [[nodiscard]] Error Failure(std::string_view what) const;

  pg_conn* conn_ = nullptr;
};

}  // namespace coapgate::registry
