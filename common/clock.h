// The clocks: monotonic time for deadlines, lifetimes and budgets, wall time for the
// `received` stamp of events. One definition for every room; any thread, allocation-free.
//
// Clock is also the seam through which a shard reads time, so that a test can drive one
// with a fake clock (tests/engine/shard_test.cc): SystemClock is the real one.
#pragma once

#include <time.h>

#include <cstdint>

namespace coapgate {

// `clock` (CLOCK_MONOTONIC or CLOCK_REALTIME) in nanoseconds; the four readings below divide
// it. uint64_t nanoseconds since the epoch last until the year 2554.
[[nodiscard]] inline uint64_t ClockNs(clockid_t clock) noexcept {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// CLOCK_MONOTONIC in milliseconds (steady, unrelated to the wall clock).
[[nodiscard]] inline uint64_t MonotonicMs() noexcept { return ClockNs(CLOCK_MONOTONIC) / 1000000; }

// CLOCK_MONOTONIC in nanoseconds (seeds, fine-grained spans).
[[nodiscard]] inline uint64_t MonotonicNs() noexcept { return ClockNs(CLOCK_MONOTONIC); }

// CLOCK_MONOTONIC in microseconds (the same clock as MonotonicMs, finer).
[[nodiscard]] inline uint64_t MonotonicUs() noexcept { return ClockNs(CLOCK_MONOTONIC) / 1000; }

// CLOCK_REALTIME as Unix epoch milliseconds.
[[nodiscard]] inline uint64_t WallMs() noexcept { return ClockNs(CLOCK_REALTIME) / 1000000; }

class Clock {
 public:
  virtual ~Clock() = default;
  [[nodiscard]] virtual uint64_t MonotonicMs() const noexcept = 0;
  [[nodiscard]] virtual uint64_t WallMs() const noexcept = 0;
  // The monotonic clock in microseconds, for durations finer than a millisecond (the request
  // duration histogram). Defaults to MonotonicMs() x 1000, so that a fake clock that only
  // keeps milliseconds stays consistent with itself.
  [[nodiscard]] virtual uint64_t MonotonicUs() const noexcept { return MonotonicMs() * 1000; }
};

class SystemClock final : public Clock {
 public:
  [[nodiscard]] uint64_t MonotonicMs() const noexcept override { return coapgate::MonotonicMs(); }
  [[nodiscard]] uint64_t WallMs() const noexcept override { return coapgate::WallMs(); }
  [[nodiscard]] uint64_t MonotonicUs() const noexcept override { return coapgate::MonotonicUs(); }
};

}  // namespace coapgate
