// The shard <-> publisher hand-off (sinks/handoff.h): what one message costs on its way to a
// publisher worker and back, in the shard's own thread (slot, push, pop, complete, pop) and
// across two threads (a shard pushing, a worker completing), where the cache-line transfers
// of the SPSC queues are the price.
#include <benchmark/benchmark.h>

#include <atomic>
#include <thread>

#include "sinks/handoff.h"

namespace coapgate::sinks {
namespace {

void BM_HandoffRoundTripOneThread(benchmark::State& state) {
  Handoff handoff(8192, 64, static_cast<uint32_t>(state.range(0)));
  uint32_t lane = 0;
  for (auto _ : state) {
    uint32_t slot = 0;
    if (!handoff.Acquire(&slot) || !handoff.PushOutbound(lane, slot)) state.SkipWithError("full");
    uint32_t taken = 0;
    if (!handoff.PopOutbound(lane, &taken)) state.SkipWithError("empty");
    handoff.Complete(lane, taken, Outcome::kAccepted);
    Outcome outcome;
    if (!handoff.PopCompletion(&slot, &outcome)) state.SkipWithError("no completion");
    handoff.Release(slot);
    lane = lane + 1 == handoff.lanes() ? 0 : lane + 1;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HandoffRoundTripOneThread)->Arg(1)->Arg(4);

// A shard thread keeps up to 1,024 messages in flight; a worker thread completes them as they
// come. Items = messages completed.
void BM_HandoffAcrossThreads(benchmark::State& state) {
  Handoff handoff(4096, 64, 1);
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    uint32_t slot;
    while (!stop.load(std::memory_order_relaxed)) {
      if (handoff.PopOutbound(0, &slot)) handoff.Complete(0, slot, Outcome::kAccepted);
    }
  });
  uint32_t in_flight = 0;
  for (auto _ : state) {
    uint32_t slot;
    while (in_flight < 1024 && handoff.Acquire(&slot)) {
      if (!handoff.PushOutbound(0, slot)) {
        handoff.Release(slot);
        break;
      }
      ++in_flight;
    }
    Outcome outcome;
    while (!handoff.PopCompletion(&slot, &outcome)) {
    }
    handoff.Release(slot);
    --in_flight;
  }
  Outcome outcome;
  uint32_t slot;
  while (in_flight > 0) {
    if (handoff.PopCompletion(&slot, &outcome)) --in_flight;
  }
  stop.store(true);
  worker.join();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HandoffAcrossThreads)->UseRealTime();

}  // namespace
}  // namespace coapgate::sinks
