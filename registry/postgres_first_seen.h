// PostgresFirstSeen: which node emits a device's one LIFECYCLE DEVICE_FIRST_TIME_REGISTERED
// event (docs/downstream.md#lifecycle, docs/cluster.md), decided by the table
// coapgate_first_seen (registry/postgres/0003_first_seen.sql).
//
// A claim is one transaction: Claim inserts the devices' rows (`INSERT ... ON CONFLICT DO
// NOTHING RETURNING`) and returns the ICCIDs it inserted, which are this node's to announce;
// the caller publishes their events and then Settles: the rows of events that did not reach
// every sink are deleted again and the rest commits. A second node claiming the same device
// meanwhile waits on the row lock and, once the first commits, gets nothing back (or, if the
// first rolled back, the row). So an event is announced by exactly one node, and one that
// failed is claimed again on a later interaction, never lost. The exceptions: a commit that
// fails after its events were delivered, or a claim aborted (the node stopping) while its
// events were on their way; a later claim announces those devices again, under the same event
// id (sinks::MakeLifecycleId).
//
// ICCIDs that are not in coapgate_devices (the node serves a local snapshot that the table has
// since lost) are not claimed: they come back neither as claimed nor as an error.
//
// Thread contract: control plane only, on the thread that owns the connection; Claim, then
// Settle or Abort, with nothing else on that connection in between.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/result.h"
#include "registry/postgres_connection.h"

namespace coapgate::registry {

class PostgresFirstSeen {
 public:
  // Opens the transaction and claims `iccids` (each validated by the registry: digits only).
  // On error the transaction is rolled back.
  [[nodiscard]] static Result<std::vector<std::string>, Error> Claim(
      PostgresConnection& db, std::span<const std::string_view> iccids);
  // Gives `failed` (a subset of what Claim returned) back and commits the rest. On error
  // everything is rolled back.
  [[nodiscard]] static Result<void, Error> Settle(PostgresConnection& db,
                                                  std::span<const std::string_view> failed);
  // Rolls the claim back (nothing was announced).
  static void Abort(PostgresConnection& db);
};

}  // namespace coapgate::registry
