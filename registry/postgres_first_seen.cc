#include "registry/postgres_first_seen.h"

namespace coapgate::registry {
namespace {

// A PostgreSQL text[] literal: ICCIDs are digits (the registry's rule), so none needs quoting.
std::string ArrayLiteral(std::span<const std::string_view> iccids) {
  std::string out = "{";
  for (const std::string_view iccid : iccids) {
    if (out.size() > 1) out.push_back(',');
    out.append(iccid);
  }
  out.push_back('}');
  return out;
}

}  // namespace

Result<std::vector<std::string>, Error> PostgresFirstSeen::Claim(
    PostgresConnection& db, std::span<const std::string_view> iccids) {
  if (auto begun = db.Execute("BEGIN", "claiming first registrations"); !begun) {
    return tl::unexpected<Error>(std::move(begun).error());
  }
  // Only devices the table has (the foreign key would fail the whole batch for one that is
  // missing); the database's clock, like every other time coapgate keeps there. In ICCID
  // order, so that two nodes' overlapping batches take their row locks in one order and
  // never deadlock.
  auto rows = db.Query(
      "INSERT INTO coapgate_first_seen (iccid, first_seen) "
      "SELECT iccid, now() FROM coapgate_devices WHERE iccid = ANY($1::text[]) ORDER BY iccid "
      "ON CONFLICT (iccid) DO NOTHING RETURNING iccid",
      {ArrayLiteral(iccids)}, "claiming first registrations");
  if (!rows) {
    Abort(db);
    return tl::unexpected<Error>(std::move(rows).error());
  }
  std::vector<std::string> claimed;
  claimed.reserve(rows->size());
  for (auto& row : *rows) claimed.push_back(std::move(row.at(0)));
  return claimed;
}

Result<void, Error> PostgresFirstSeen::Settle(PostgresConnection& db,
                                              std::span<const std::string_view> failed) {
  if (!failed.empty()) {
    auto given_back = db.Query("DELETE FROM coapgate_first_seen WHERE iccid = ANY($1::text[])",
                               {ArrayLiteral(failed)}, "giving failed first registrations back");
    if (!given_back) {
      Abort(db);
      return tl::unexpected<Error>(std::move(given_back).error());
    }
  }
  if (auto committed = db.Execute("COMMIT", "committing first registrations"); !committed) {
    Abort(db);
    return tl::unexpected<Error>(std::move(committed).error());
  }
  return {};
}

void PostgresFirstSeen::Abort(PostgresConnection& db) {
  if (db.ok()) (void)db.Execute("ROLLBACK", "rolling first registrations back");
}

}  // namespace coapgate::registry
