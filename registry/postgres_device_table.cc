#include "registry/postgres_device_table.h"

#include <charconv>
#include <string_view>
#include <utility>
#include <vector>

namespace coapgate::registry {
namespace {

struct Migration {
  const char* name;
  const char* sql;
};

// registry/postgres/NNNN_*.sql in file-name order, embedded at build time (the CMake list
// generates this file): migration i is schema version i + 1.
constexpr Migration kMigrations[] = {
#include "registry/postgres_migrations.inc"
};
constexpr int kKnownVersion = static_cast<int>(std::size(kMigrations));

// pg_advisory_xact_lock key for schema changes: "coapgate" in ASCII, as an int8.
constexpr std::string_view kMigrationLock = "SELECT pg_advisory_xact_lock(7165064744101852773)";

Result<uint64_t, Error> ParseCount(const std::string& text, std::string_view what) {
  uint64_t value = 0;
  if (text.empty()) return value;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return FailEnvironment("postgres: " + std::string(what) + ": not a number: " + text);
  }
  return value;
}

// A query whose one value is a count or a change number.
Result<uint64_t, Error> QueryCount(PostgresConnection& db, std::string_view sql,
                                   std::string_view what) {
  auto text = db.QueryValue(sql, what);
  if (!text) return tl::unexpected<Error>(std::move(text).error());
  return ParseCount(*text, what);
}

// Runs `body` inside BEGIN/COMMIT, rolling back when it fails (the first error wins).
template <class Body>
auto InTransaction(PostgresConnection& db, std::string_view begin, Body body)
    -> decltype(body()) {
  if (auto started = db.Execute(begin, "begin"); !started) {
    return tl::unexpected<Error>(std::move(started).error());
  }
  auto result = body();
  if (!result) {
    (void)db.Execute("ROLLBACK", "rollback");
    return result;
  }
  if (auto committed = db.Execute("COMMIT", "commit"); !committed) {
    return tl::unexpected<Error>(std::move(committed).error());
  }
  return result;
}

// One CSV field as RFC 4180 wants it: quoted when it holds a comma, quote or line break.
void AppendCsvField(std::string* out, std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) {
    out->append(field);
    return;
  }
  out->push_back('"');
  for (const char c : field) {
    if (c == '"') out->push_back('"');
    out->push_back(c);
  }
  out->push_back('"');
}

}  // namespace

Result<int, Error> PostgresDeviceTable::Migrate(PostgresConnection& db) {
  return InTransaction(db, "BEGIN", [&]() -> Result<int, Error> {
    if (auto locked = db.Execute(kMigrationLock, "locking the schema"); !locked) {
      return tl::unexpected<Error>(std::move(locked).error());
    }
    if (auto made = db.Execute("CREATE TABLE IF NOT EXISTS coapgate_schema_migrations ("
                               "version integer PRIMARY KEY, name text NOT NULL, "
                               "applied_at timestamptz NOT NULL DEFAULT now())",
                               "creating coapgate_schema_migrations");
        !made) {
      return tl::unexpected<Error>(std::move(made).error());
    }
    auto current = QueryCount(
        db, "SELECT coalesce(max(version), 0) FROM coapgate_schema_migrations", "schema version");
    if (!current) return tl::unexpected<Error>(std::move(current).error());
    if (*current > static_cast<uint64_t>(kKnownVersion)) {
      return FailEnvironment("postgres: the database's schema is version " +
                             std::to_string(*current) + ", newer than this coapgate knows (" +
                             std::to_string(kKnownVersion) + "): upgrade coapgate");
    }
    for (int v = static_cast<int>(*current) + 1; v <= kKnownVersion; ++v) {
      const Migration& m = kMigrations[v - 1];
      if (auto applied = db.Execute(m.sql, std::string("migration ") + m.name); !applied) {
        return tl::unexpected<Error>(std::move(applied).error());
      }
      // The name is ours (a file name of the repository): no quoting concerns.
      if (auto noted = db.Execute("INSERT INTO coapgate_schema_migrations (version, name) "
                                  "VALUES (" + std::to_string(v) + ", '" + m.name + "')",
                                  "recording the migration");
          !noted) {
        return tl::unexpected<Error>(std::move(noted).error());
      }
    }
    return kKnownVersion;
  });
}

Result<uint64_t, Error> PostgresDeviceTable::LatestSeq(PostgresConnection& db) {
  return QueryCount(db, "SELECT coalesce(max(seq), 0) FROM coapgate_devices", "latest change");
}

Result<DeviceTableSnapshot, Error> PostgresDeviceTable::ReadAll(PostgresConnection& db) {
  // One snapshot of the table for both the rows and their change number: a change committed
  // in between is then newer than `seq` and followed later, never lost.
  return InTransaction(
      db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
      [&]() -> Result<DeviceTableSnapshot, Error> {
        DeviceTableSnapshot out;
        auto seq = LatestSeq(db);
        if (!seq) return tl::unexpected<Error>(std::move(seq).error());
        out.seq = *seq;
        // The devices CSV exactly (docs/registry.md), so the snapshot is built by the same
        // loader as a file's, and written to disk as a file the node can start from.
        auto csv = db.CopyOut(
            "COPY (SELECT iccid, imsi, coalesce(host(ip), '') AS ip, status, psk, psk_format "
            "FROM coapgate_devices WHERE NOT deleted ORDER BY iccid) "
            "TO STDOUT WITH (FORMAT csv, HEADER true)",
            "reading coapgate_devices");
        if (!csv) return tl::unexpected<Error>(std::move(csv).error());
        out.csv = std::move(*csv);
        auto registered = db.CopyOut("COPY coapgate_first_seen (iccid) TO STDOUT",
                                     "reading coapgate_first_seen");
        if (!registered) return tl::unexpected<Error>(std::move(registered).error());
        out.registered = std::move(*registered);
        return out;
      });
}

Result<ImportCounts, Error> PostgresDeviceTable::Import(PostgresConnection& db,
                                                        const DeviceRegistry& devices,
                                                        bool replace,
                                                        uint32_t max_removed_percent) {
  std::string csv = "iccid,imsi,ip,status,psk,psk_format\n";
  csv.reserve(devices.size() * 64);
  for (size_t i = 0; i < devices.size(); ++i) {
    const DeviceView d = devices.Get(i);
    csv.append(d.iccid).push_back(',');
    csv.append(d.imsi).push_back(',');
    if (d.ip) csv.append(d.ip->ToString());
    csv.append(d.active ? ",active," : ",inactive,");
    AppendCsvField(&csv, d.psk);
    csv.append(d.psk.empty() ? ",\n" : d.psk_format == PskFormat::kHex ? ",hex\n" : ",string\n");
  }
  return InTransaction(db, "BEGIN", [&]() -> Result<ImportCounts, Error> {
    ImportCounts counts;
    counts.rows = devices.size();
    if (auto made = db.Execute(
            "CREATE TEMP TABLE coapgate_import (iccid text PRIMARY KEY, imsi text, ip inet, "
            "status text, psk text, psk_format text) ON COMMIT DROP",
            "creating the import table");
        !made) {
      return tl::unexpected<Error>(std::move(made).error());
    }
    if (auto copied = db.CopyIn(
            "COPY coapgate_import FROM STDIN WITH (FORMAT csv, HEADER true, "
            "FORCE_NOT_NULL (imsi, status, psk, psk_format))",
            csv, "copying the devices");
        !copied) {
      return tl::unexpected<Error>(std::move(copied).error());
    }
    if (replace) {
      auto live = QueryCount(db, "SELECT count(*) FROM coapgate_devices WHERE NOT deleted",
                             "counting the devices");
      if (!live) return tl::unexpected<Error>(std::move(live).error());
      auto removed = QueryCount(
          db,
          "WITH gone AS (UPDATE coapgate_devices d SET deleted = true WHERE NOT d.deleted "
          "AND NOT EXISTS (SELECT 1 FROM coapgate_import i WHERE i.iccid = d.iccid) "
          "RETURNING 1) SELECT count(*) FROM gone",
          "marking devices deleted");
      if (!removed) return tl::unexpected<Error>(std::move(removed).error());
      counts.removed = *removed;
      if (*removed * 100 > uint64_t{max_removed_percent} * *live) {
        return tl::unexpected<Error>(Error{
            ErrorKind::kBadInput,
            "--replace would remove " + std::to_string(*removed) + " of the " +
                std::to_string(*live) + " devices (more than devices.reload_max_removed_percent = " +
                std::to_string(max_removed_percent) +
                "%); is the file complete? --force removes them anyway"});
      }
    }
    // Addresses that move between devices of the file: free them first, so the unique index
    // on ip does not refuse an exchange of addresses halfway through the upsert.
    if (auto freed = db.Execute(
            "UPDATE coapgate_devices d SET ip = NULL FROM coapgate_import i "
            "WHERE NOT d.deleted AND d.ip = i.ip AND d.iccid <> i.iccid "
            "AND EXISTS (SELECT 1 FROM coapgate_import j WHERE j.iccid = d.iccid)",
            "moving addresses");
        !freed) {
      return tl::unexpected<Error>(std::move(freed).error());
    }
    auto upserted = db.QueryValue(
        "WITH up AS (INSERT INTO coapgate_devices AS d (iccid, imsi, ip, status, psk, psk_format) "
        "SELECT iccid, imsi, ip, status, psk, psk_format FROM coapgate_import "
        "ON CONFLICT (iccid) DO UPDATE SET imsi = EXCLUDED.imsi, ip = EXCLUDED.ip, "
        "status = EXCLUDED.status, psk = EXCLUDED.psk, psk_format = EXCLUDED.psk_format, "
        "deleted = false "
        "WHERE (d.imsi, d.ip, d.status, d.psk, d.psk_format, d.deleted) IS DISTINCT FROM "
        "(EXCLUDED.imsi, EXCLUDED.ip, EXCLUDED.status, EXCLUDED.psk, EXCLUDED.psk_format, false) "
        "RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted) || ',' || count(*) FILTER (WHERE NOT inserted) "
        "FROM up",
        "writing the devices");
    if (!upserted) return tl::unexpected<Error>(std::move(upserted).error());
    const size_t comma = upserted->find(',');
    auto added = ParseCount(upserted->substr(0, comma), "added");
    auto changed = ParseCount(comma == std::string::npos ? "" : upserted->substr(comma + 1),
                              "changed");
    if (!added) return tl::unexpected<Error>(std::move(added).error());
    if (!changed) return tl::unexpected<Error>(std::move(changed).error());
    counts.added = *added;
    counts.changed = *changed;
    return counts;
  });
}

}  // namespace coapgate::registry
