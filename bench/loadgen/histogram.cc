#include "bench/loadgen/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace coapgate::loadgen {

void LatencyHistogram::Merge(const LatencyHistogram& other) noexcept {
  for (unsigned i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  total_ += other.total_;
}

double LatencyHistogram::Quantile(double q) const noexcept {
  if (total_ == 0) return 0;
  const double exact = q * static_cast<double>(total_);
  const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(exact)));
  uint64_t seen = 0;
  for (unsigned i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) return Midpoint(i);
  }
  return Midpoint(kBuckets - 1);
}

unsigned LatencyHistogram::Index(uint64_t ns) noexcept {
  if (ns < kSub) return static_cast<unsigned>(ns);
  const unsigned e = static_cast<unsigned>(std::bit_width(ns)) - 1;  // >= kSubBits
  if (e >= kMaxExponent) return kBuckets - 1;
  return (e - kSubBits + 1) * kSub + static_cast<unsigned>((ns >> (e - kSubBits)) & (kSub - 1));
}

double LatencyHistogram::Midpoint(unsigned index) noexcept {
  if (index < kSub) return index;
  const unsigned e = index / kSub + kSubBits - 1;
  const uint64_t width = uint64_t{1} << (e - kSubBits);
  const uint64_t lower = (kSub + index % kSub) * width;
  return static_cast<double>(lower) + static_cast<double>(width) / 2;
}

}  // namespace coapgate::loadgen
