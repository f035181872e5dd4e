// LatencyHistogram: a fixed-size log-linear histogram of latencies in nanoseconds, one bucket
// layout for every mode of the load generator so that their percentiles compare. Exact below 32 ns, then 32
// sub-buckets per power of two (at most 3.2 % relative error), clamped at 2^37 ns (137 s).
// 8.4 KiB, no per-sample storage, O(1) Record.
//
// Thread contract: not synchronized; each worker owns one and the main thread merges them
// after the workers have been joined.
#pragma once

#include <array>
#include <cstdint>

namespace coapgate::loadgen {

class LatencyHistogram {
 public:
  void Record(uint64_t ns) noexcept {
    ++counts_[Index(ns)];
    ++total_;
  }
  void Merge(const LatencyHistogram& other) noexcept;

  // The midpoint of the bucket holding the q-quantile (0 < q <= 1), in ns; 0 when empty.
  [[nodiscard]] double Quantile(double q) const noexcept;
  [[nodiscard]] uint64_t count() const noexcept { return total_; }

 private:
  static constexpr unsigned kSubBits = 5;
  static constexpr unsigned kSub = 1u << kSubBits;
  static constexpr unsigned kMaxExponent = 37;
  static constexpr unsigned kBuckets = (kMaxExponent - kSubBits + 1) * kSub;

  static unsigned Index(uint64_t ns) noexcept;
  static double Midpoint(unsigned index) noexcept;

  std::array<uint64_t, kBuckets> counts_{};
  uint64_t total_ = 0;
};

}  // namespace coapgate::loadgen
