// DeviceSource: where the device registry comes from. The server loads a complete snapshot
// from its source at start and again on every SIGHUP; a source builds it with
// DeviceRegistry::Builder, so every backend (the CSV file today, a database table) gives the
// same lookups, the same validation and the same error messages, and the data path never
// knows which one it was.
//
// Thread contract: Load runs on one control thread at a time (start-up, the signal thread),
// never on a shard, and may block on I/O for as long as the source needs.
#pragma once

#include <memory>
#include <string>

#include "common/error.h"
#include "common/result.h"
#include "registry/device_registry.h"

namespace coapgate::registry {

struct LoadedDevices {
  std::shared_ptr<const DeviceRegistry> devices;  ///< never null
  // The source does not exist (yet): `devices` is empty and every device gets 4.01 until it
  // does. Not an error at start, so a node can be installed before its registry.
  bool missing = false;
};

class DeviceSource {
 public:
  virtual ~DeviceSource() = default;

  // A complete, validated snapshot, or why not: kBadInput for a source whose content is wrong
  // (its message names the row), kEnvironment for one the system refuses.
  [[nodiscard]] virtual Result<LoadedDevices, Error> Load() = 0;

  // What logs and messages call the source: a path, a database name (never a password).
  [[nodiscard]] virtual const std::string& name() const noexcept = 0;
};

}  // namespace coapgate::registry
