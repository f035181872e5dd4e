#include "registry/postgres_connection.h"

#include <libpq-fe.h>

#include <algorithm>
#include <array>
#include <memory>
#include <utility>

namespace coapgate::registry {
namespace {

// libpq's messages end with a newline and may span lines (DETAIL, HINT): one line for logs.
std::string OneLine(const char* message) {
  std::string out = message == nullptr ? "" : message;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  for (char& c : out) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  return out.empty() ? "unknown error" : out;
}

struct ResultDeleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

// After a COPY, libpq wants every remaining result read before the next command.
void DrainResults(pg_conn* conn) {
  for (PGresult* r = PQgetResult(conn); r != nullptr; r = PQgetResult(conn)) PQclear(r);
}

}  // namespace

Result<PostgresConnection, Error> PostgresConnection::Connect(const std::string& dsn) {
  // Our defaults first: with expand_dbname the DSN's own settings, processed after them, win.
  const std::array<const char*, 4> keywords = {"connect_timeout", "application_name", "dbname",
                                               nullptr};
  const std::array<const char*, 4> values = {"5", "coapgate", dsn.c_str(), nullptr};
  pg_conn* conn = PQconnectdbParams(keywords.data(), values.data(), /*expand_dbname=*/1);
  if (conn == nullptr) return FailEnvironment("postgres: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string reason = OneLine(PQerrorMessage(conn));
    PQfinish(conn);
    return FailEnvironment("postgres: cannot connect: " + reason);
  }
  return PostgresConnection(conn);
}

PostgresConnection::PostgresConnection(PostgresConnection&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)) {}

PostgresConnection& PostgresConnection::operator=(PostgresConnection&& other) noexcept {
  if (this != &other) {
    if (conn_ != nullptr) PQfinish(conn_);
    conn_ = std::exchange(other.conn_, nullptr);
  }
  return *this;
}

PostgresConnection::~PostgresConnection() {
  if (conn_ != nullptr) PQfinish(conn_);
}

Error PostgresConnection::Failure(std::string_view what) const {
  return Error{ErrorKind::kEnvironment,
               "postgres: " + std::string(what) + ": " + OneLine(PQerrorMessage(conn_))};
}

Result<void, Error> PostgresConnection::Execute(std::string_view sql, std::string_view what) {
  const std::string text(sql);
  ResultPtr r(PQexec(conn_, text.c_str()));
  const ExecStatusType status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return tl::unexpected<Error>(Failure(what));
  }
  return {};
}

Result<std::string, Error> PostgresConnection::QueryValue(std::string_view sql,
                                                          std::string_view what) {
  const std::string text(sql);
  ResultPtr r(PQexec(conn_, text.c_str()));
  if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK) return tl::unexpected<Error>(Failure(what));
  if (PQntuples(r.get()) == 0 || PQnfields(r.get()) == 0 || PQgetisnull(r.get(), 0, 0)) {
    return std::string();
  }
  return std::string(PQgetvalue(r.get(), 0, 0),
                     static_cast<size_t>(PQgetlength(r.get(), 0, 0)));
}

Result<PostgresConnection::Rows, Error> PostgresConnection::Query(
    std::string_view sql, std::initializer_list<std::string_view> params, std::string_view what) {
  const std::string text(sql);
  std::vector<std::string> values(params.begin(), params.end());  // NUL-terminated copies
  std::vector<const char*> pointers;
  pointers.reserve(values.size());
  for (const std::string& v : values) pointers.push_back(v.c_str());
  ResultPtr r(PQexecParams(conn_, text.c_str(), static_cast<int>(pointers.size()), nullptr,
                           pointers.data(), nullptr, nullptr, /*resultFormat=*/0));
  const ExecStatusType status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return tl::unexpected<Error>(Failure(what));
  }
  Rows rows;
  const int n = PQntuples(r.get());
  const int columns = PQnfields(r.get());
  rows.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    auto& row = rows.emplace_back();
    row.reserve(static_cast<size_t>(columns));
    for (int c = 0; c < columns; ++c) {
      row.emplace_back(PQgetvalue(r.get(), i, c), static_cast<size_t>(PQgetlength(r.get(), i, c)));
    }
  }
  return rows;
}

Result<std::string, Error> PostgresConnection::CopyOut(std::string_view copy_sql,
                                                       std::string_view what) {
  const std::string text(copy_sql);
  {
    ResultPtr r(PQexec(conn_, text.c_str()));
    if (!r || PQresultStatus(r.get()) != PGRES_COPY_OUT) return tl::unexpected<Error>(Failure(what));
  }
  std::string out;
  for (;;) {
    char* row = nullptr;
    const int n = PQgetCopyData(conn_, &row, /*async=*/0);
    if (n > 0) {
      out.append(row, static_cast<size_t>(n));
      PQfreemem(row);
      continue;
    }
    if (n == -2) return tl::unexpected<Error>(Failure(what));
    break;  // -1: the copy is complete; its status follows
  }
  ResultPtr done(PQgetResult(conn_));
  if (!done || PQresultStatus(done.get()) != PGRES_COMMAND_OK) {
    return tl::unexpected<Error>(Failure(what));
  }
  DrainResults(conn_);
  return out;
}

Result<void, Error> PostgresConnection::CopyIn(std::string_view copy_sql, std::string_view data,
                                               std::string_view what) {
  const std::string text(copy_sql);
  {
    ResultPtr r(PQexec(conn_, text.c_str()));
    if (!r || PQresultStatus(r.get()) != PGRES_COPY_IN) return tl::unexpected<Error>(Failure(what));
  }
  constexpr size_t kChunk = size_t{1} << 20;
  for (size_t at = 0; at < data.size(); at += kChunk) {
    const size_t n = std::min(kChunk, data.size() - at);
    if (PQputCopyData(conn_, data.data() + at, static_cast<int>(n)) != 1) {
      return tl::unexpected<Error>(Failure(what));
    }
  }
  if (PQputCopyEnd(conn_, nullptr) != 1) return tl::unexpected<Error>(Failure(what));
  ResultPtr done(PQgetResult(conn_));
  const bool good = done && PQresultStatus(done.get()) == PGRES_COMMAND_OK;
  const Error failure = good ? Error{} : Failure(what);
  DrainResults(conn_);
  if (!good) return tl::unexpected<Error>(failure);
  return {};
}

bool PostgresConnection::ok() const noexcept {
  return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK;
}

int PostgresConnection::socket() const noexcept {
  return conn_ == nullptr ? -1 : PQsocket(conn_);
}

Result<bool, Error> PostgresConnection::NextNotification(std::string* payload) {
  if (PQconsumeInput(conn_) != 1) return tl::unexpected<Error>(Failure("reading notifications"));
  PGnotify* note = PQnotifies(conn_);
  if (note == nullptr) return false;
  *payload = note->extra == nullptr ? "" : note->extra;
  PQfreemem(note);
  return true;
}

}  // namespace coapgate::registry
