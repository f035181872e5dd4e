// RegistryHolder: the current device-registry snapshot, swapped on SIGHUP while the shards
// keep serving (see sinks/snapshot_holder.h for the mechanism).
#pragma once

#include "engine/device_registry.h"
#include "sinks/snapshot_holder.h"

namespace coapgate::engine {

using RegistryHolder = sinks::SnapshotHolder<DeviceRegistry>;

}  // namespace coapgate::engine
