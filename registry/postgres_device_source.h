// PostgresDeviceSource: the registry in the PostgreSQL table several nodes share
// (`devices.backend = "postgres"`, docs/cluster.md). Each Load reads the whole table into a
// snapshot, built by the same loader as a CSV file's, and writes that snapshot to a local
// file; when the database cannot be reached, Load falls back to that file, so a node starts
// (and keeps serving) from the last registry it saw, and says so.
//
// Thread contract: Load runs on one control thread at a time (the server's main thread). The
// accessors may be read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "registry/device_source.h"

namespace coapgate::registry {

class PostgresDeviceSource final : public DeviceSource {
 public:
  // `dsn`: libpq's connection string; `snapshot_path`: the local copy (written 0600: it holds
  // the user-set keys).
  PostgresDeviceSource(std::string dsn, std::string snapshot_path);

  // The table's devices, or the local snapshot's when the database is unreachable (then the
  // log says why and which snapshot; `database_reachable()` turns false). Errors: the database
  // is unreachable and there is no snapshot (kEnvironment), or the table holds a row the
  // loader refuses (kBadInput, naming the row's line in the table's ICCID order).
  [[nodiscard]] Result<LoadedDevices, Error> Load() override;
  [[nodiscard]] const std::string& name() const noexcept override { return name_; }

  // The change number the current snapshot is consistent with (0 before the first load from
  // the database): the follower compares notifications with it.
  [[nodiscard]] uint64_t loaded_seq() const noexcept {
    return loaded_seq_.load(std::memory_order_acquire);
  }
  // Whether the last Load reached the database.
  [[nodiscard]] bool database_reachable() const noexcept {
    return reachable_.load(std::memory_order_acquire);
  }
  [[nodiscard]] const std::string& dsn() const noexcept { return dsn_; }

 private:
  [[nodiscard]] Result<LoadedDevices, Error> LoadSnapshotFile(const Error& why);

  const std::string dsn_;
  const std::string snapshot_path_;
  const std::string name_ = "postgres table coapgate_devices";
  std::atomic<uint64_t> loaded_seq_{0};
  std::atomic<bool> reachable_{false};
};

}  // namespace coapgate::registry
