// Log setup: coapgate's one logger (spdlog's default logger, named "coapgate"), on stderr,
// in the format and at the level of `[log]` (docs/operations.md "Logs"):
//
//   text: 2026-12-02T10:00:00.123 info listening coap://0.0.0.0:5683 (...)
//         (local time, as before [log] existed; colored when stderr is a terminal)
//   json: {"ts":"2026-12-02T09:00:00.123Z","level":"info","msg":"...", <fields>}
//         one object per line, "ts" RFC 3339 UTC with milliseconds, the fields a call site
//         attached with ScopedLogFields (common/log_fields.h) after "msg".
//
// Thread contract: SetUpLogging replaces the default logger and must run while no other
// thread logs (main, before the server starts). The logger is synchronous, which
// common/log_fields.h relies on: lines are formatted on the thread that logs them. The level
// check (spdlog's should_log) is one relaxed atomic load, so call sites check it before
// formatting anything (engine/device_log.h).
#pragma once

#include <memory>

#include <spdlog/formatter.h>

#include "config/config.h"

namespace coapgate::app {

void SetUpLogging(config::LogLevel level, config::LogFormat format);

// The JSON line formatter (exposed for its test).
[[nodiscard]] std::unique_ptr<spdlog::formatter> MakeJsonFormatter();

}  // namespace coapgate::app
