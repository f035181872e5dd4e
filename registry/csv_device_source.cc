#include "registry/csv_device_source.h"

#include <filesystem>
#include <system_error>

#include "common/check.h"

namespace coapgate::registry {

Result<LoadedDevices, Error> CsvDeviceSource::Load() {
  // Only "no such file" is a missing registry; a file we may not look at (EACCES on its
  // directory, say) is an error, never an empty registry.
  std::error_code ec;
  const bool exists = std::filesystem::exists(path_, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return FailEnvironment(path_ + ": cannot stat: " + ec.message());
  }
  if (!exists) {
    auto empty = DeviceRegistry::ParseCsv("iccid,imsi,ip,status,psk,psk_format\n", path_);
    CHECK(empty, "the header-only registry always parses");
    return LoadedDevices{std::move(*empty), true};
  }
  auto devices = DeviceRegistry::LoadCsvFile(path_);
  if (!devices) return tl::unexpected<Error>(std::move(devices).error());
  return LoadedDevices{std::move(*devices), false};
}

}  // namespace coapgate::registry
