#include "sinks/sink_failure_log.h"

#include <spdlog/spdlog.h>

#include <utility>

namespace coapgate::sinks {

SinkFailureLog::SinkFailureLog(std::string label, uint64_t interval_ms) noexcept
    : label_(std::move(label)), interval_ms_(interval_ms) {}

void SinkFailureLog::Report(SinkCounters& counters, SinkFailure cause, uint64_t n,
                            uint64_t now_ms, std::string_view detail) noexcept {
  if (n == 0) return;
  counters.Fail(cause, n);
  Turn& turn = turns_[static_cast<size_t>(cause)];
  turn.pending += n;
  if (turn.last_ms != 0 && now_ms - turn.last_ms < interval_ms_) return;
  spdlog::warn("{}: {} message(s) {} ({}): {}", label_, turn.pending,
               IsRefusal(cause) ? "refused" : "failed", ToString(cause), detail);
  turn.last_ms = now_ms == 0 ? 1 : now_ms;
  turn.pending = 0;
}

}  // namespace coapgate::sinks
