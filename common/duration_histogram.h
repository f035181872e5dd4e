// DurationHistogram: a fixed-bucket histogram of durations that one thread records into and
// any thread reads, for the Prometheus histograms of /metrics (coapgate_request_duration_seconds).
//
// Why its own type: the shards must not pay a lock, an allocation or a read-modify-write per
// observation, and prometheus-cpp's Histogram takes a mutex per Observe. So each shard owns
// one of these and the admin listener merges the shards' snapshots at scrape time.
//
// Thread contract: Record is called by one thread only, the owner (a shard thread): it is a
// relaxed load and store per bucket and for the sum, no lock prefix. Read and every const
// member may be called by any thread at any time; a reader may see an observation's bucket
// before its sum, or a count a few observations old, never a torn value.
//
// Invariants: kBoundsUs is strictly increasing; an observation of d microseconds lands in the
// first bucket whose bound is >= d (Prometheus' `le`), or in the last (+Inf) bucket. A
// Snapshot's count() is the sum of its buckets, so the +Inf cumulative count always equals
// _count, whatever the reader raced with. Allocation: none (the buckets are members).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace coapgate {

class alignas(64) DurationHistogram {
 public:
  // Upper bounds of the finite buckets, in microseconds: 100 us to 10 s, about 2.5x apart
  // (a reply answered in the turn that received it is sub-millisecond; one that waited for a
  // sink is milliseconds; one answered 5.03 by the response budget is ~1.5 s).
  static constexpr std::array<uint64_t, 16> kBoundsUs{
      100,    250,    500,     1000,    2500,    5000,    10000,   25000,
      50000,  100000, 250000,  500000,  1000000, 2500000, 5000000, 10000000};
  static constexpr size_t kBuckets = kBoundsUs.size() + 1;  ///< the last one is +Inf

  // What a reader saw: counts per bucket (not cumulative) and the sum of the durations.
  struct Snapshot {
    std::array<uint64_t, kBuckets> counts{};
    uint64_t sum_us = 0;

    [[nodiscard]] uint64_t count() const noexcept;
    // Adds `other` bucket by bucket: the merge of several shards' histograms.
    void Add(const Snapshot& other) noexcept;
  };

  // The bucket an observation of `us` microseconds falls in: 0 .. kBuckets - 1.
  [[nodiscard]] static size_t BucketOf(uint64_t us) noexcept;

  // Owner thread only: `n` observations of `us` microseconds each (n > 1: a batch of replies
  // sent at the same moment for requests received at the same moment).
  void Record(uint64_t us, uint64_t n = 1) noexcept {
    std::atomic<uint64_t>& bucket = counts_[BucketOf(us)];
    bucket.store(bucket.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    sum_us_.store(sum_us_.load(std::memory_order_relaxed) + us * n, std::memory_order_relaxed);
  }

  // Any thread.
  [[nodiscard]] Snapshot Read() const noexcept;

 private:
  std::array<std::atomic<uint64_t>, kBuckets> counts_{};
  std::atomic<uint64_t> sum_us_{0};
};

}  // namespace coapgate
