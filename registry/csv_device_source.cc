#include "registry/csv_device_source.h"

#include <filesystem>
#include <system_error>

#include "common/check.h"

namespace coapgate::registry {

Result<LoadedDevices, Error> CsvDeviceSource::Load() {
  std::error_code ec;
  if (!std::filesystem::exists(path_, ec)) {
    auto empty = DeviceRegistry::ParseCsv("iccid,imsi,ip,status,psk,psk_format\n", path_);
    CHECK(empty, "the header-only registry always parses");
    return LoadedDevices{std::move(*empty), true};
  }
  auto devices = DeviceRegistry::LoadCsvFile(path_);
  if (!devices) return tl::unexpected<Error>(std::move(devices).error());
  return LoadedDevices{std::move(*devices), false};
}

}  // namespace coapgate::registry
