// Energy Saver translation throughput: one Translate (run the program, format the JSON) per
// item, for the reference templates T-feat (TV-1), T-full (TV-6) and T-switch (TV-4)
// (1nce-coap-endpoint.md §5.6). The goal for TV-1 is >= 5 million translations/s per core.
// `allocs/item` comes from the counting operator new (tests/support/allocation_counter.h),
// read around an untimed loop of 1000 translations; it must be 0.
#include <benchmark/benchmark.h>

#include <array>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "energy_saver/template_program.h"
#include "energy_saver/translator.h"
#include "tests/energy_saver/energy_saver_templates.h"
#include "tests/support/allocation_counter.h"

namespace coapgate::energysaver {
namespace {

using reference::kTFeat;
using reference::kTFull;
using reference::kTSwitch;

std::vector<std::byte> Bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

void RunTranslate(benchmark::State& state, std::string_view templ,
                  const std::vector<std::byte>& payload) {
  auto program = CompileTemplate(templ);
  if (!program) {
    state.SkipWithError(program.error().c_str());
    return;
  }
  Translator translator(*program);
  std::array<char, 512> out;
  const auto once = [&] {
    auto r = translator.Translate(payload, out);
    if (!r) std::abort();
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(out.data());
    return *r;
  };
  constexpr int kProbe = 1000;
  const long before = test::AllocationCount();
  size_t json_size = 0;
  for (int i = 0; i < kProbe; ++i) json_size = once();
  const long allocations = test::AllocationCount() - before;
  for (auto _ : state) once();
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * payload.size()));
  state.counters["allocs/item"] = benchmark::Counter(static_cast<double>(allocations) / kProbe);
  state.counters["json_bytes"] = benchmark::Counter(static_cast<double>(json_size));
}

void BM_EnergySaverTv1TemperatureHumiditySwitch(benchmark::State& state) {
  RunTranslate(state, kTFeat, Bytes({0x00, 0x1A, 0x00, 0x37, 0x00}));
}
BENCHMARK(BM_EnergySaverTv1TemperatureHumiditySwitch);

void BM_EnergySaverTv6FullExample(benchmark::State& state) {
  RunTranslate(state, kTFull, Bytes({0x01, 0x01, 0x00, 0x00, 0x05, 0x8c, 0x6f, 0x6c, 0x65, 0x67}));
}
BENCHMARK(BM_EnergySaverTv6FullExample);

void BM_EnergySaverTv4PositionalSwitch(benchmark::State& state) {
  RunTranslate(state, kTSwitch,
               Bytes({0x00, 0x42, 0x4b, 0xbc, 0xf9, 0x40, 0xde, 0x98, 0x1c, 0x00, 0x78}));
}
BENCHMARK(BM_EnergySaverTv4PositionalSwitch);

// Control-plane cost, for scale: compiling T-full (allocates; not per message).
void BM_EnergySaverCompileFullExample(benchmark::State& state) {
  for (auto _ : state) {
    auto program = CompileTemplate(kTFull);
    benchmark::DoNotOptimize(program);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_EnergySaverCompileFullExample);

}  // namespace
}  // namespace coapgate::energysaver
