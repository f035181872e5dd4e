#include "common/duration_histogram.h"

#include <gtest/gtest.h>

#include <thread>

namespace coapgate {
namespace {

TEST(DurationHistogram, BucketsAreInclusiveUpperBounds) {
  EXPECT_EQ(DurationHistogram::BucketOf(0), 0u);
  EXPECT_EQ(DurationHistogram::BucketOf(100), 0u);    // le="0.0001"
  EXPECT_EQ(DurationHistogram::BucketOf(101), 1u);
  EXPECT_EQ(DurationHistogram::BucketOf(1000), 3u);   // le="0.001"
  EXPECT_EQ(DurationHistogram::BucketOf(10000000), DurationHistogram::kBoundsUs.size() - 1);
  EXPECT_EQ(DurationHistogram::BucketOf(10000001), DurationHistogram::kBuckets - 1);  // +Inf
  EXPECT_EQ(DurationHistogram::BucketOf(UINT64_MAX), DurationHistogram::kBuckets - 1);
}

TEST(DurationHistogram, RecordCountsAndSums) {
  DurationHistogram h;
  EXPECT_EQ(h.Read().count(), 0u);
  h.Record(50);
  h.Record(2000, 3);   // a batch: three replies of one turn
  h.Record(20000000);  // beyond the last bound
  const DurationHistogram::Snapshot s = h.Read();
  EXPECT_EQ(s.count(), 5u);
  EXPECT_EQ(s.sum_us, 50u + 6000u + 20000000u);
  EXPECT_EQ(s.counts[0], 1u);
  EXPECT_EQ(s.counts[DurationHistogram::BucketOf(2000)], 3u);
  EXPECT_EQ(s.counts[DurationHistogram::kBuckets - 1], 1u);
}

TEST(DurationHistogram, SnapshotsMergeBucketByBucket) {
  DurationHistogram a;
  DurationHistogram b;
  a.Record(10);
  b.Record(10);
  b.Record(700000);
  DurationHistogram::Snapshot merged = a.Read();
  merged.Add(b.Read());
  EXPECT_EQ(merged.count(), 3u);
  EXPECT_EQ(merged.counts[0], 2u);
  EXPECT_EQ(merged.counts[DurationHistogram::BucketOf(700000)], 1u);
  EXPECT_EQ(merged.sum_us, 700020u);
}

// One writer, one concurrent reader: the reader never sees a count go backwards, and once
// the writer is done it sees every observation (run under TSan too: no data race).
TEST(DurationHistogram, OneWriterAndAReaderOnAnotherThread) {
  DurationHistogram h;
  constexpr uint64_t kObservations = 100000;
  std::thread writer([&] {
    for (uint64_t i = 0; i < kObservations; ++i) h.Record(i % 3000000);
  });
  uint64_t last = 0;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t now = h.Read().count();
    EXPECT_GE(now, last);
    last = now;
  }
  writer.join();
  EXPECT_EQ(h.Read().count(), kObservations);
}

}  // namespace
}  // namespace coapgate
