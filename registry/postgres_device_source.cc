#include "registry/postgres_device_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <system_error>

#include <spdlog/spdlog.h>

#include "common/atomic_file.h"
#include "registry/postgres_device_table.h"

namespace coapgate::registry {
namespace {

// Marks each ICCID of `lines` (one per line) that the snapshot has as kRegistered.
void MarkRegistered(const DeviceRegistry& devices, std::string_view lines) {
  while (!lines.empty()) {
    const size_t end = lines.find('\n');
    const std::string_view iccid = lines.substr(0, end);
    if (const std::optional<DeviceView> d = devices.FindByIccid(iccid)) {
      devices.MarkRegistered(d->index);
    }
    if (end == std::string_view::npos) break;
    lines.remove_prefix(end + 1);
  }
}

}  // namespace

PostgresDeviceSource::PostgresDeviceSource(std::string dsn, std::string snapshot_path)
    : dsn_(std::move(dsn)), snapshot_path_(std::move(snapshot_path)) {}

Result<LoadedDevices, Error> PostgresDeviceSource::Load() {
  auto db = PostgresConnection::Connect(dsn_);
  if (!db) return LoadSnapshotFile(db.error());
  if (auto migrated = PostgresDeviceTable::Migrate(*db); !migrated) {
    return LoadSnapshotFile(migrated.error());
  }
  auto table = PostgresDeviceTable::ReadAll(*db);
  if (!table) return LoadSnapshotFile(table.error());
  reachable_.store(true, std::memory_order_release);
  auto devices = DeviceRegistry::ParseCsv(table->csv, name_);
  if (!devices) return tl::unexpected<Error>(std::move(devices).error());
  MarkRegistered(**devices, table->registered);
  // The local copy is a convenience for the next start: failing to write it is logged, and the
  // registry is served all the same.
  if (auto written = WriteFileAtomically(snapshot_path_, table->csv); !written) {
    spdlog::warn("registry snapshot not written: {}", written.error().message);
  }
  loaded_seq_.store(table->seq, std::memory_order_release);
  return LoadedDevices{std::move(*devices), false};
}

Result<LoadedDevices, Error> PostgresDeviceSource::LoadSnapshotFile(const Error& why) {
  reachable_.store(false, std::memory_order_release);
  struct stat st;
  if (::stat(snapshot_path_.c_str(), &st) != 0) {
    return FailEnvironment(why.message + " (and no registry snapshot at " + snapshot_path_ +
                           " to start from)");
  }
  auto devices = DeviceRegistry::LoadCsvFile(snapshot_path_);
  if (!devices) return tl::unexpected<Error>(std::move(devices).error());
  char when[32] = "?";
  const std::time_t written = st.st_mtime;
  std::tm utc;
  if (gmtime_r(&written, &utc) != nullptr) std::strftime(when, sizeof when, "%FT%TZ", &utc);
  spdlog::warn("{}; serving the registry snapshot {} written {} ({} devices) until the "
               "database is back",
               why.message, snapshot_path_, when, (*devices)->size());
  return LoadedDevices{std::move(*devices), false};
}

}  // namespace coapgate::registry
