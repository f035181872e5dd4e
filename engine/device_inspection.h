// Device inspection: the admin listener's answer to "what did this device do last?", for a
// fleet support ticket (docs/operations.md "Inspecting a device"):
//
//   GET /devices/{iccid}          GET /devices/by-address/{ip}
//   200 {"registered":true,"iccid":"...","imsi":"...","ip":"10.0.0.1","status":"active",
//        "last_seen":"2026-12-02T10:23:21Z","last_code":"4.01","last_reason":"inactive",
//        "dtls_session":false,"last_handshake_failure":null,"key_source":"csv",
//        "last_bootstrap":null}
//   404 {"registered":false}      400 {"error":"iccid must be 18 to 22 digits"}
//
// Never the key itself: only where it comes from ("csv", "generated", or "none").
//
// Thread contract: runs on the admin listener's threads. It reads the registry snapshot
// (immutable, shared) and the devices' activity words (relaxed atomic loads,
// registry/device_activity.h), and asks the PskStore through its shared lock for one hash
// lookup; it never touches anything a shard owns and never blocks a shard.
#pragma once

#include <string_view>

#include "admin/admin_server.h"
#include "registry/device_registry.h"
#include "registry/key_store.h"

namespace coapgate::engine {

// `psk_store` may be null (no bootstrap state: every key source is "csv" or "none").
[[nodiscard]] admin::JsonReply InspectDeviceByIccid(const registry::DeviceRegistry& registry,
                                                    const registry::KeyStore* psk_store,
                                                    std::string_view iccid);
[[nodiscard]] admin::JsonReply InspectDeviceByAddress(const registry::DeviceRegistry& registry,
                                                      const registry::KeyStore* psk_store,
                                                      std::string_view ip);

}  // namespace coapgate::engine
