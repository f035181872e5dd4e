// Codec micro-benchmarks: the per-datagram work of the ingest path. Each benchmark also
// reports `allocs/item` from the counting operator new (tests/support/allocation_counter.h), so "zero allocations" is visible in
// every published number (and asserted in tests/codec/allocation_test.cc).
#include <benchmark/benchmark.h>

#include <array>
#include <cstdlib>
#include <string>
#include <vector>

#include "codec/code.h"
#include "codec/encoder.h"
#include "codec/request.h"
#include "codec/triage.h"
#include "tests/support/allocation_counter.h"

namespace coapgate::codec {
namespace {

// A typical device POST: CON, 4-byte token, Uri-Path "" (node-coap-client), Uri-Query
// t=sensors/temperature, Content-Format 50, and a payload of `payload_size` bytes.
std::vector<std::byte> DevicePost(size_t payload_size) {
  const std::string query = "t=sensors/temperature";  // 21 bytes: length 13 + 8
  std::vector<uint8_t> d = {0x44, 0x02, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef,  // header, token
                            0xb0,                                            // Uri-Path ""
                            0x11, 0x32,                                      // Content-Format 50
                            0x3d, static_cast<uint8_t>(query.size() - 13)};  // Uri-Query
  d.insert(d.end(), query.begin(), query.end());
  d.push_back(0xff);
  for (size_t i = 0; i < payload_size; ++i) d.push_back(static_cast<uint8_t>('a' + i % 26));
  std::vector<std::byte> out(d.size());
  for (size_t i = 0; i < d.size(); ++i) out[i] = static_cast<std::byte>(d[i]);
  return out;
}

template <class Fn>
void Run(benchmark::State& state, Fn&& fn) {
  const long before = test::AllocationCount();
  for (auto _ : state) fn();
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["allocs/item"] = benchmark::Counter(
      static_cast<double>(test::AllocationCount() - before) / static_cast<double>(state.iterations()));
}

void BM_ParseDevicePost(benchmark::State& state) {
  const auto d = DevicePost(static_cast<size_t>(state.range(0)));
  Run(state, [&] {
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
  Run(state, [&] {
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
  Run(state, [&] {
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
  Run(state, [&] {
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
  Run(state, [&] {
    const Triage t = TriageDatagram(d, limits);
    auto n = EncodeTriageReply(t, limits, 0, out);
    benchmark::DoNotOptimize(n);
  });
}
BENCHMARK(BM_TriageMalformed);

}  // namespace
}  // namespace coapgate::codec

BENCHMARK_MAIN();
