// `coapgate upgrade [--config FILE]`: replaces the running coapgate with a new process of the
// executable at the same path (after a package upgrade: the new version) without a gap. It
// asks the running process, over its take-over socket (engine/takeover_channel.h), to start
// `coapgate --take-over` as its own child — inside the same systemd service — and to hand its
// sockets over; it waits for the outcome. Used by the package's postinst and by operators.
#pragma once

#include "config/config.h"

namespace coapgate::app {

// Exit code: 0 once the successor serves (its pid on stdout), 1 when there is nothing to
// upgrade or the hand-over failed (the running process serves on; stderr says why).
[[nodiscard]] int Upgrade(const config::Config& config);

}  // namespace coapgate::app
