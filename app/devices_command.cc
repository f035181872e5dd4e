#include "app/devices_command.h"

#include <chrono>
#include <cstdio>
#include <iostream>

#include "common/error.h"
#include "registry/device_registry.h"
#include "registry/postgres_connection.h"
#include "registry/postgres_device_table.h"

namespace coapgate::app {
namespace {

// The commands need the database: with the CSV backend there is nothing to import into.
bool RequirePostgres(const config::Config& config, const std::string& config_name,
                     const char* command) {
  if (config.devices.backend == config::DeviceBackend::kPostgres) return true;
  std::cerr << "coapgate devices " << command << ": " << config_name
            << ": devices.backend is \"csv\": this command works on the PostgreSQL registry "
               "(set devices.backend = \"postgres\" and devices.postgres.dsn)\n";
  return false;
}

Result<registry::PostgresConnection, Error> Open(const config::Config& config) {
  auto db = registry::PostgresConnection::Connect(config.devices.postgres.dsn);
  if (!db) return db;
  if (auto migrated = registry::PostgresDeviceTable::Migrate(*db); !migrated) {
    return tl::unexpected<Error>(std::move(migrated).error());
  }
  return db;
}

}  // namespace

int ImportDevices(const config::Config& config, const std::string& config_name,
                  const std::string& file, bool replace, bool force) {
  if (!RequirePostgres(config, config_name, "import")) return ExitCode(ErrorKind::kBadInput);
  const auto started = std::chrono::steady_clock::now();
  auto devices = registry::DeviceRegistry::LoadCsvFile(file);
  if (!devices) {
    std::cerr << devices.error().message << "\n";
    return ExitCode(devices.error().kind);
  }
  auto db = Open(config);
  if (!db) {
    std::cerr << db.error().message << "\n";
    return ExitCode(db.error().kind);
  }
  auto counts = registry::PostgresDeviceTable::Import(
      *db, **devices, replace, force ? 100 : config.devices.reload_max_removed_percent);
  if (!counts) {
    std::cerr << file << ": not imported, nothing changed: " << counts.error().message << "\n";
    return ExitCode(counts.error().kind);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("%s: %llu devices: %llu added, %llu changed, %llu removed (%.2f s)\n", file.c_str(),
              static_cast<unsigned long long>(counts->rows),
              static_cast<unsigned long long>(counts->added),
              static_cast<unsigned long long>(counts->changed),
              static_cast<unsigned long long>(counts->removed), seconds);
  return 0;
}

int ExportDevices(const config::Config& config, const std::string& config_name) {
  if (!RequirePostgres(config, config_name, "export")) return ExitCode(ErrorKind::kBadInput);
  auto db = Open(config);
  if (!db) {
    std::cerr << db.error().message << "\n";
    return ExitCode(db.error().kind);
  }
  auto table = registry::PostgresDeviceTable::ReadAll(*db);
  if (!table) {
    std::cerr << table.error().message << "\n";
    return ExitCode(table.error().kind);
  }
  std::fwrite(table->csv.data(), 1, table->csv.size(), stdout);
  if (std::fflush(stdout) != 0) {
    std::perror("coapgate devices export: stdout");
    return ExitCode(ErrorKind::kEnvironment);
  }
  return 0;
}

}  // namespace coapgate::app
