// What the request-duration histogram costs the shard (issue #13: metrics may cost nothing per
// request beyond the counters): one Record per reply that waited for the sinks, and per loop
// turn one MonotonicUs read and one batched Record for the replies of that turn.
#include <benchmark/benchmark.h>

#include <cstdint>

#include "common/clock.h"
#include "common/duration_histogram.h"

namespace coapgate {
namespace {

void BM_DurationHistogramRecord(benchmark::State& state) {
  DurationHistogram h;
  uint64_t us = 1;
  for (auto _ : state) {
    h.Record(us);
    us = (us * 2862933555777941757ULL + 3037000493ULL) % 3000000;  // spread over the buckets
  }
  benchmark::DoNotOptimize(h.Read().count());
}
BENCHMARK(BM_DurationHistogramRecord);

void BM_MonotonicUs(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(MonotonicUs());
}
BENCHMARK(BM_MonotonicUs);

// The scrape side: reading one shard's histogram (merged per shard at scrape time).
void BM_DurationHistogramRead(benchmark::State& state) {
  DurationHistogram h;
  for (uint64_t i = 0; i < 1000; ++i) h.Record(i * 997);
  for (auto _ : state) benchmark::DoNotOptimize(h.Read());
}
BENCHMARK(BM_DurationHistogramRead);

}  // namespace
}  // namespace coapgate
