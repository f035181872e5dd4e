// SinkFailureLog: the log side of a sink's failures. Every cause of a message not reaching a
// sink (SinkFailure) reaches the log, but a cause repeating at message rate (a broker away
// for minutes, a full in-flight window) makes one line per interval per cause, carrying how
// many messages it stands for, never one line per message.
//
// Thread contract: owned by one sink, used on its publisher worker's thread only (sink.h).
// No allocation after construction except spdlog's own formatting when a line is written.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "sinks/sink.h"

namespace coapgate::sinks {

class SinkFailureLog {
 public:
  // `label` is the sink's (sink.h); lines are "<label>: <n> message(s) refused|failed
  // (<cause>): <detail>". `interval_ms` is the least time between two lines of one cause.
  explicit SinkFailureLog(std::string label, uint64_t interval_ms = 10000) noexcept;

  // Counts `n` messages under `cause` into `counters` and logs them when the cause's turn
  // has come (else they are added to the next line's number). `now_ms` is CLOCK_MONOTONIC.
  void Report(SinkCounters& counters, SinkFailure cause, uint64_t n, uint64_t now_ms,
              std::string_view detail) noexcept;

 private:
  struct Turn {
    uint64_t last_ms = 0;   ///< when this cause was last logged; 0 = never
    uint64_t pending = 0;   ///< messages counted since then, not yet in a line
  };
  std::string label_;
  uint64_t interval_ms_;
  Turn turns_[static_cast<size_t>(SinkFailure::kCount_)];
};

}  // namespace coapgate::sinks
