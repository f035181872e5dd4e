// Device log: one line per refused request or failed DTLS handshake, naming the device (ICCID
// when known, always the source address), the answer's code and the reason, in the reason
// vocabulary of registry/device_activity.h. This is how an operator learns why one device of
// a fleet keeps getting 4.01 without reading a packet capture.
//
//   debug: every refusal, one line each.
//   info:  sampled per reason: at most one line per reason per 10 s, carrying
//          "(N more suppressed)" for the lines held back since that reason's previous line,
//          so a flood of unknown devices costs a line every 10 s, not one per datagram.
//   warn, error: none.
//
// JSON format fields (app/log_setup.h): "addr", "iccid" (when known), "code" ("4.01"; absent
// for handshakes), "reason", "suppressed" (a number, when > 0).
//
// Cost on the data plane: the level is checked first (a relaxed load), then at info the
// reason's rate limiter (a relaxed load, and one atomic add when held back), and only a line
// that is written gets formatted; formatting uses stack buffers, no allocation before spdlog's
// own (it formats into an inline buffer for lines this short).
//
// Thread contract: any thread (every shard calls it); the rate limiters are process-wide.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string_view>

#include "registry/device_activity.h"

namespace coapgate::engine {

// At info level, at most one line per reason per this long.
inline constexpr uint64_t kDeviceLogIntervalMs = 10000;

// A refused request: `code` is the CoAP answer; or, with code 0, a failed DTLS handshake.
// `iccid` may be empty (unknown device): then the address alone names it; it may be untrusted
// (a PSK identity nobody registered): it is shown with anything unprintable replaced.
// `now_ms` is the caller's monotonic clock (the shard's loop time).
void LogRefusal(const sockaddr* peer, std::string_view iccid, uint8_t code,
                registry::Reason why, uint64_t now_ms) noexcept;

}  // namespace coapgate::engine
