// Codec micro-benchmarks: the per-datagram work of the ingest path. Each benchmark also
// reports `allocs/item` from the counting operator new (tests/support/allocation_counter.h),
// so "zero allocations" is visible in every published number (and asserted in
// tests/codec/allocation_test.cc). libcoap_bench.cc runs libcoap's parser in the same binary.
#include <benchmark/benchmark.h>

#include <array>
#include <cstdlib>

#include "bench/codec/device_post.h"
#include "codec/code.h"
#include "codec/encoder.h"
#include "codec/request.h"
#include "codec/triage.h"

namespace coapgate::codec {
namespace {

void BM_ParseDevicePost(benchmark::State& state) {
  const auto d = DevicePost(static_cast<size_t>(state.range(0)));
  RunCounted(state, [&] {
    auto m = ParseMessage(d);
    benchmark::DoNotOptimize(m);
  });
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * d.size()));
}
BENCHMARK(BM_ParseDevicePost)->Arg(32)->Arg(64);

// Parse + validate every option + route + topic extraction and validation + limits: the
// whole protocol-level decision the engine makes per datagram.
void BM_TriageDevicePost(benchmark::State& state) {
  const auto d = DevicePost(static_cast<size_t>(state.range(0)));
  const TriageLimits limits;
  RunCounted(state, [&] {
    const Triage t = TriageDatagram(d, limits);
    benchmark::DoNotOptimize(t);
    if (t.action != Action::kRequest || t.request.topic_status != TopicStatus::kValid) {
      std::abort();
    }
  });
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * d.size()));
}
BENCHMARK(BM_TriageDevicePost)->Arg(32)->Arg(64);

void BM_EncodeChangedAck(benchmark::State& state) {
  const auto d = DevicePost(32);
  auto request = ParseMessage(d);
  std::array<std::byte, 64> out;
  RunCounted(state, [&] {
    auto n = EncodeMessage(ResponseTo(*request, code::kChanged, 0), out);
    benchmark::DoNotOptimize(n);
    benchmark::DoNotOptimize(out.data());
  });
}
BENCHMARK(BM_EncodeChangedAck);

void BM_EncodeServiceUnavailable(benchmark::State& state) {
  const auto d = DevicePost(32);
  auto request = ParseMessage(d);
  std::array<std::byte, 64> out;
  uint32_t max_age = 30;
  RunCounted(state, [&] {
    OutgoingMessage reply = ResponseTo(*request, code::kServiceUnavailable, 0);
    reply.max_age = max_age++ % 60;
    auto n = EncodeMessage(reply, out);
    benchmark::DoNotOptimize(n);
    benchmark::DoNotOptimize(out.data());
  });
}
BENCHMARK(BM_EncodeServiceUnavailable);

void BM_TriageMalformed(benchmark::State& state) {
  std::vector<std::byte> d = {std::byte{0x40}, std::byte{0x02}, std::byte{0x12}, std::byte{0x34},
                              std::byte{0xbe}, std::byte{0x01}};
  const TriageLimits limits;
  std::array<std::byte, 64> out;
  RunCounted(state, [&] {
    const Triage t = TriageDatagram(d, limits);
    auto n = EncodeTriageReply(t, limits, 0, out);
    benchmark::DoNotOptimize(n);
  });
}
BENCHMARK(BM_TriageMalformed);

}  // namespace
}  // namespace coapgate::codec

BENCHMARK_MAIN();
