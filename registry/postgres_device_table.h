// PostgresDeviceTable: the registry as a PostgreSQL table that several nodes share
// (docs/cluster.md): its schema and migrations (registry/postgres/*.sql, compiled in), the
// whole-table read a node builds its snapshot from, the change feed it follows, and the
// operator's import and export.
//
// Thread contract: control plane only, on whichever thread owns the connection passed in.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/error.h"
#include "common/result.h"
#include "registry/device_registry.h"
#include "registry/postgres_connection.h"

namespace coapgate::registry {

// The NOTIFY channel of registry changes; the payload is the highest `seq` a statement wrote.
inline constexpr const char* kDeviceChangesChannel = "coapgate_devices";

struct DeviceTableSnapshot {
  std::string csv;  ///< every live device as a devices CSV (header first): the snapshot's text
  uint64_t seq = 0;  ///< the highest change number it includes
  // The ICCIDs whose first registration is recorded (coapgate_first_seen), one per line: the
  // snapshot marks them kRegistered so that no node asks about them again.
  std::string registered;
};

struct ImportCounts {
  uint64_t rows = 0;     ///< devices in the file
  uint64_t added = 0;    ///< not in the table before (or deleted there)
  uint64_t changed = 0;  ///< in the table with other fields
  uint64_t removed = 0;  ///< marked deleted because the file lacks them (replace only)
};

class PostgresDeviceTable {
 public:
  // Applies the migrations the database lacks, in order, each in its own transaction under an
  // advisory lock (two nodes starting together apply each once). Refuses a database whose
  // schema is newer than this coapgate knows. Returns the schema version in force.
  [[nodiscard]] static Result<int, Error> Migrate(PostgresConnection& db);

  // Every live device and the change number the read is consistent with (one REPEATABLE READ
  // transaction): a node then follows changes with seq greater than it.
  [[nodiscard]] static Result<DeviceTableSnapshot, Error> ReadAll(PostgresConnection& db);

  // The highest change number in the table (0 for an empty one).
  [[nodiscard]] static Result<uint64_t, Error> LatestSeq(PostgresConnection& db);

  // Writes `devices` (already validated: a snapshot) into the table in one transaction: new
  // ICCIDs are added, known ones updated when a field differs, and with `replace` every live
  // device absent from `devices` is marked deleted. Atomic: on any error nothing changed (the
  // message names the device when the database refuses one, e.g. an address another device
  // already has). With `replace`, an import that would remove more than `max_removed_percent`
  // of the live devices is refused (kBadInput, nothing changed): a CSV cut short at a row
  // boundary is valid and would turn every node's missing devices away. 100 = no limit.
  [[nodiscard]] static Result<ImportCounts, Error> Import(PostgresConnection& db,
                                                          const DeviceRegistry& devices,
                                                          bool replace,
                                                          uint32_t max_removed_percent = 100);
};

}  // namespace coapgate::registry
