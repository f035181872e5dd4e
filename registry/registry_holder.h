// RegistryHolder: the current device-registry snapshot, swapped on SIGHUP while the shards
// keep serving (see sinks/snapshot_holder.h for the mechanism).
#pragma once

#include "registry/device_registry.h"
#include "common/snapshot_holder.h"

namespace coapgate::registry {

using RegistryHolder = SnapshotHolder<DeviceRegistry>;

}  // namespace coapgate::registry
