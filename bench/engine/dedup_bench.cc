// DedupTable micro-benchmarks: the per-request work of duplicate detection on a shard.
// Both run against a full table (steady state), where every admission also evicts, and report
// `bytes/entry` (ring + index, SPEC §4 bounds it at 64). Linked with benchmark_main.
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "engine/dedup_table.h"

namespace coapgate::engine {
namespace {

constexpr uint8_t kChanged = 0x44;  // 2.04
constexpr uint8_t kAck = 2;
constexpr std::array<std::byte, 4> kToken{std::byte{0xde}, std::byte{0xad}, std::byte{0xbe},
                                          std::byte{0xef}};

// Key number n: a v4-mapped address from n's high bits and a port:MID from its low bits, so
// many devices send a few MIDs each (as in the field) and every n below 2^48 is distinct.
DedupKey KeyOf(uint64_t n) {
  DedupKey key{};
  key.peer[10] = 0xff;
  key.peer[11] = 0xff;
  const auto device = static_cast<uint32_t>(n >> 20);
  std::memcpy(key.peer.data() + 12, &device, 4);
  key.port = static_cast<uint16_t>(5683 + ((n >> 16) & 0xf));
  key.message_id = static_cast<uint16_t>(n);
  return key;
}

DedupTable::Limits BenchLimits(int64_t capacity) {
  return {.capacity = static_cast<uint32_t>(capacity), .hash_seed = 0x5eed};
}

// Admits and completes `count` keys starting at key number 0: the table is then full of done
// entries, the state every later admission finds.
void Fill(DedupTable& table, uint64_t count, uint32_t now_s) {
  for (uint64_t n = 0; n < count; ++n) {
    const auto a = table.Admit(KeyOf(n), kToken, true, now_s);
    if (a.verdict != DedupTable::Verdict::kNew ||
        !table.Complete(a.handle, kChanged, kAck, a.entry->key.message_id, 0)) {
      std::abort();
    }
  }
}

void ReportMemory(benchmark::State& state, const DedupTable& table) {
  state.counters["bytes/entry"] =
      static_cast<double>(table.MemoryBytes()) / static_cast<double>(table.capacity());
  state.SetItemsProcessed(state.iterations());
}

// One new request per iteration: admit (a probe that misses, evicting the oldest done entry,
// with its backward-shift deletion), then complete it, then the per-turn ExpireUntil (which
// finds nothing due: at this rate the bound, not the lifetime, retires entries).
void BM_DedupAdmitNew(benchmark::State& state) {
  DedupTable table(BenchLimits(state.range(0)));
  const uint32_t now_s = 1000;
  uint64_t n = table.capacity();
  Fill(table, n, now_s);
  for (auto _ : state) {
    const auto a = table.Admit(KeyOf(n++), kToken, true, now_s);
    benchmark::DoNotOptimize(a);
    if (a.verdict != DedupTable::Verdict::kNew) std::abort();
    table.Complete(a.handle, kChanged, kAck, a.entry->key.message_id, 0);
    table.ExpireUntil(now_s);
  }
  if (table.stats().evictions == 0 && state.iterations() > 0) std::abort();
  ReportMemory(state, table);
}
BENCHMARK(BM_DedupAdmitNew)->Arg(1 << 12)->Arg(1 << 20);

// A retransmission: the probe hits a done entry whose cached response is then read. Keys are
// visited in a scrambled order (an odd multiplier permutes 0..capacity-1) so the cache sees
// the random access a real table gets.
void BM_DedupDuplicateHit(benchmark::State& state) {
  DedupTable table(BenchLimits(state.range(0)));
  const uint32_t now_s = 1000;
  const uint64_t capacity = table.capacity();
  Fill(table, capacity, now_s);
  uint64_t i = 0;
  for (auto _ : state) {
    const uint64_t n = (i++ * 0x9e3779b1u) & (capacity - 1);  // REQUIRES: capacity is 2^k
    const auto a = table.Admit(KeyOf(n), kToken, true, now_s + 1);
    if (a.verdict != DedupTable::Verdict::kDuplicateDone) std::abort();
    benchmark::DoNotOptimize(a.entry->response_code);
  }
  ReportMemory(state, table);
}
BENCHMARK(BM_DedupDuplicateHit)->Arg(1 << 12)->Arg(1 << 20);

}  // namespace
}  // namespace coapgate::engine
