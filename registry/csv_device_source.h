// CsvDeviceSource: the registry in the operator's CSV file (docs/registry.md), the embedded
// default. Each Load reads the whole file again; replacing it atomically (write a new file,
// rename it over the old one) is what makes a SIGHUP see either the old or the new registry.
#pragma once

#include <string>

#include "registry/device_source.h"

namespace coapgate::registry {

class CsvDeviceSource final : public DeviceSource {
 public:
  explicit CsvDeviceSource(std::string path) : path_(std::move(path)) {}

  // A missing file loads as an empty registry with `missing` set; an unreadable or invalid one
  // is an error naming the path (and the line).
  [[nodiscard]] Result<LoadedDevices, Error> Load() override;
  [[nodiscard]] const std::string& name() const noexcept override { return path_; }

 private:
  std::string path_;
};

}  // namespace coapgate::registry
