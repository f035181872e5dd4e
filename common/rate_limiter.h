// RateLimiter: lets one event through per interval and counts the ones it held back, so that
// a cause repeating at datagram rate (a full disk, a flood of unknown devices) reaches the log
// once per interval with the number it stands for, never once per event.
//
// Thread contract: Allow may be called from any number of threads at once (one relaxed CAS);
// no allocation, no lock.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/clock.h"

namespace coapgate {

class RateLimiter {
 public:
  explicit RateLimiter(uint64_t interval_ms) noexcept : interval_ms_(interval_ms) {}

  // True at most once per interval. On true, *suppressed (if given) is the number of calls
  // held back since the previous true.
  [[nodiscard]] bool Allow(uint64_t now_ms, uint64_t* suppressed = nullptr) noexcept {
    uint64_t next = next_ms_.load(std::memory_order_relaxed);
    if (now_ms < next ||
        !next_ms_.compare_exchange_strong(next, now_ms + interval_ms_,
                                          std::memory_order_relaxed)) {
      held_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    const uint64_t held = held_.exchange(0, std::memory_order_relaxed);
    if (suppressed != nullptr) *suppressed = held;
    return true;
  }
  [[nodiscard]] bool Allow(uint64_t* suppressed = nullptr) noexcept {
    return Allow(MonotonicMs(), suppressed);
  }

 private:
  const uint64_t interval_ms_;
  std::atomic<uint64_t> next_ms_{0};
  std::atomic<uint64_t> held_{0};
};

}  // namespace coapgate
