#include "common/duration_histogram.h"

#include <algorithm>

namespace coapgate {

static_assert(std::is_sorted(DurationHistogram::kBoundsUs.begin(),
                             DurationHistogram::kBoundsUs.end()));

size_t DurationHistogram::BucketOf(uint64_t us) noexcept {
  // The first bound >= us; past the last bound: the +Inf bucket (index kBoundsUs.size()).
  return static_cast<size_t>(std::lower_bound(kBoundsUs.begin(), kBoundsUs.end(), us) -
                             kBoundsUs.begin());
}

DurationHistogram::Snapshot DurationHistogram::Read() const noexcept {
  Snapshot s;
  for (size_t i = 0; i < kBuckets; ++i) s.counts[i] = counts_[i].load(std::memory_order_relaxed);
  s.sum_us = sum_us_.load(std::memory_order_relaxed);
  return s;
}

uint64_t DurationHistogram::Snapshot::count() const noexcept {
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  return total;
}

void DurationHistogram::Snapshot::Add(const Snapshot& other) noexcept {
  for (size_t i = 0; i < kBuckets; ++i) counts[i] += other.counts[i];
  sum_us += other.sum_us;
}

}  // namespace coapgate
