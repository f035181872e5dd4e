// Envelope micro-benchmarks: the per-message formatting work of a publisher thread (docs/downstream.md)
// and the idempotency key computed per request (docs/delivery.md). bytes/s counts envelope bytes
// written (FormatEnvelope) or request bytes hashed (MakeMessageId).
#include <benchmark/benchmark.h>

#include <array>
#include <span>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "sinks/envelope.h"

namespace coapgate::sinks {
namespace {

constexpr std::string_view kIccid = "8988280666000002864";
constexpr std::string_view kTopic = "sensors/temp";
const std::array<std::byte, 4> kToken = {std::byte{0xde}, std::byte{0xad}, std::byte{0xbe},
                                         std::byte{0xef}};

std::vector<std::byte> Payload(size_t size) {
  std::vector<std::byte> payload(size);
  for (size_t i = 0; i < size; ++i) payload[i] = static_cast<std::byte>(i * 37 + 11);
  return payload;
}

// The envelope of one uplink of `payload` (which must outlive the fields: they view it).
EnvelopeFields UplinkFields(std::span<const std::byte> payload) {
  EnvelopeFields f{};
  f.id = MakeMessageId(kIccid, 0x3039, kToken, kTopic, payload);
  f.received_ms = 1670598749915;
  f.iccid = kIccid;
  f.imsi = "901405100002864";
  f.ip = "100.91.200.24";
  f.topic = kTopic;
  f.payload = payload;
  return f;
}

// A typical uplink: 48-byte payload, topic "sensors/temp"; 1024 is 1NCE's safe maximum.
void BM_FormatEnvelope(benchmark::State& state) {
  const auto payload = Payload(static_cast<size_t>(state.range(0)));
  const EnvelopeFields f = UplinkFields(payload);
  std::array<char, 2048> out;
  if (MaxEnvelopeSize(f) > out.size()) std::abort();
  size_t n = 0;
  for (auto _ : state) {
    n = FormatTelemetryEnvelope(f, out);
    benchmark::DoNotOptimize(n);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  if (n != MaxEnvelopeSize(f)) std::abort();
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
  state.counters["envelope_bytes"] = static_cast<double>(n);
}
BENCHMARK(BM_FormatEnvelope)->Arg(48)->Arg(1024);

// What a caller that sizes its buffer first pays: MaxEnvelopeSize + the formatter.
void BM_SizeAndFormatEnvelope(benchmark::State& state) {
  const auto payload = Payload(48);
  const EnvelopeFields f = UplinkFields(payload);
  std::array<char, 2048> out;
  for (auto _ : state) {
    const size_t size = MaxEnvelopeSize(f);
    benchmark::DoNotOptimize(size);
    const size_t n = FormatTelemetryEnvelope(f, std::span<char>(out).first(size));
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_SizeAndFormatEnvelope);

void BM_MakeMessageId(benchmark::State& state) {
  const auto payload = Payload(static_cast<size_t>(state.range(0)));
  uint16_t mid = 0;
  for (auto _ : state) {
    const MessageId id = MakeMessageId(kIccid, mid++, kToken, kTopic, payload);
    benchmark::DoNotOptimize(id);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(
      state.iterations() * (kIccid.size() + 2 + kToken.size() + kTopic.size() + payload.size())));
}
BENCHMARK(BM_MakeMessageId)->Arg(48)->Arg(1024);

}  // namespace
}  // namespace coapgate::sinks
