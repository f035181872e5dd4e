// MonotonicNs: CLOCK_MONOTONIC in nanoseconds, the load generator's one clock for deadlines,
// pacing and latencies (common/clock.h counts milliseconds, too coarse for a latency
// histogram). Any thread, allocation-free.
#pragma once

#include <time.h>

#include <cstdint>

namespace coapgate::loadgen {

[[nodiscard]] inline uint64_t MonotonicNs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace coapgate::loadgen
