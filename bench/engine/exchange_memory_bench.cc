// ExchangeMemory: the per-request work of duplicate detection on a shard, in steady state. Each
// device keeps K = 4 exchanges; each benchmark reports `bytes/device`. Linked with
// benchmark_main.
//
// Steady state: every device already has 4 done exchanges, so each new request evicts one
// entry, its device's own oldest. Devices
// are visited in a scrambled order (an odd prime multiplier permutes 0..devices-1) so that the
// cache sees the random access a real table gets. The clock stands still: nothing expires.
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "engine/exchange_memory.h"

namespace coapgate::engine {
namespace {

constexpr uint8_t kChanged = 0x44;  // 2.04
constexpr uint8_t kAck = 2;
constexpr uint32_t kPerDevice = 4;
constexpr uint32_t kNow = 1000;
constexpr uint64_t kScramble = 2654435761u;  // prime: coprime with every device count here
constexpr std::array<std::byte, 4> kToken{std::byte{0xde}, std::byte{0xad}, std::byte{0xbe},
                                          std::byte{0xef}};

std::array<uint8_t, 16> AddressOf(uint32_t device) {
  std::array<uint8_t, 16> bytes{};
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  std::memcpy(bytes.data() + 12, &device, 4);
  return bytes;
}

// A table of `devices` devices, each with kPerDevice done exchanges, and the next MID of each.
// Built once per size and shared by the benchmarks of that size (filling 1M devices takes a
// second; Google Benchmark calls a benchmark several times while it settles on an iteration
// count). Stays in steady state across calls: every call admits new MIDs the same way.
struct ExchangeFleet {
  explicit ExchangeFleet(uint32_t devices)
      : memory({.devices = devices, .per_device = kPerDevice, .hash_seed = 0x5eed}),
        next_mid(devices, 0) {
    for (uint32_t round = 0; round < kPerDevice; ++round) {
      for (uint32_t d = 0; d < devices; ++d) Admit(d);
    }
  }
  void Admit(uint32_t d) {
    const auto a = memory.Admit(DeviceKeyForAddress(AddressOf(d)), next_mid[d]++, kToken, true,
                                kNow);
    if (a.verdict != ExchangeMemory::Verdict::kNew ||
        !memory.Complete(a.handle, kChanged, kAck, a.entry->message_id(), 0)) {
      std::abort();
    }
  }
  ExchangeMemory memory;
  std::vector<uint16_t> next_mid;
};

template <class Fleet>
Fleet& FleetOf(uint32_t devices) {
  static std::unique_ptr<Fleet> small;
  static std::unique_ptr<Fleet> large;
  auto& slot = devices <= 256 ? small : large;
  if (!slot) slot = std::make_unique<Fleet>(devices);
  return *slot;
}

// The loop both exchange benchmarks share: one `request(fleet, device)` per iteration over the
// devices of the fleet of size state.range(0), in the scrambled order from the first device at
// each call; then the `bytes/device` counter. Returns the fleet for checks after the loop.
template <class Request>
ExchangeFleet& RunOverFleet(benchmark::State& state, Request request) {
  const auto devices = static_cast<uint32_t>(state.range(0));
  ExchangeFleet& fleet = FleetOf<ExchangeFleet>(devices);
  uint64_t i = 0;
  for (auto _ : state) request(fleet, static_cast<uint32_t>((i++ * kScramble) % devices));
  state.counters["bytes/device"] =
      static_cast<double>(fleet.memory.MemoryBytes()) / static_cast<double>(devices);
  state.SetItemsProcessed(state.iterations());
  return fleet;
}

// One new request per iteration: Admit (the device's own oldest done entry goes), Complete,
// and a one-record Sweep standing in for the per-turn call.
void BM_ExchangeAdmitComplete(benchmark::State& state) {
  const ExchangeFleet& fleet = RunOverFleet(state, [](ExchangeFleet& f, uint32_t d) {
    ExchangeMemory& memory = f.memory;
    const auto a =
        memory.Admit(DeviceKeyForAddress(AddressOf(d)), f.next_mid[d]++, kToken, true, kNow);
    benchmark::DoNotOptimize(a);
    if (a.verdict != ExchangeMemory::Verdict::kNew) std::abort();
    memory.Complete(a.handle, kChanged, kAck, a.entry->message_id(), 0);
    memory.Sweep(kNow, 1);
  });
  if (fleet.memory.stats().evicted_table_bound != 0) std::abort();
}

// A retransmission of the device's latest exchange: a hit on a done entry whose cached
// response is read.
void BM_ExchangeDuplicateHit(benchmark::State& state) {
  RunOverFleet(state, [](ExchangeFleet& f, uint32_t d) {
    const auto mid = static_cast<uint16_t>(f.next_mid[d] - 1);
    const auto a = f.memory.Admit(DeviceKeyForAddress(AddressOf(d)), mid, kToken, true, kNow + 1);
    if (a.verdict != ExchangeMemory::Verdict::kDuplicateDone) std::abort();
    benchmark::DoNotOptimize(a.entry->response_code());
  });
}

// The identity digest the shard computes per DTLS datagram (or once per session).
void BM_DeviceKeyForIdentity(benchmark::State& state) {
  const char identity[] = "89882280666012345678";
  for (auto _ : state) {
    benchmark::DoNotOptimize(DeviceKeyForIdentity(identity));
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_ExchangeAdmitComplete)->Arg(256)->Arg(1'000'000);
BENCHMARK(BM_ExchangeDuplicateHit)->Arg(256)->Arg(1'000'000);
BENCHMARK(BM_DeviceKeyForIdentity);

}  // namespace
}  // namespace coapgate::engine
