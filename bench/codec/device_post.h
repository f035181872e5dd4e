// Shared by the codec benchmarks: the typical device POST they all parse, and the timed loop
// that also reports allocations per item.
#pragma once

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/allocation_counter.h"

namespace coapgate::codec {

// A typical device POST: CON, 4-byte token, Uri-Path "" (node-coap-client), Uri-Query
// t=sensors/temperature, Content-Format 50, and a payload of `payload_size` bytes.
inline std::vector<std::byte> DevicePost(size_t payload_size) {
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

// Runs the timed loop and reports items/s plus `allocs/item`, counted over a separate
// untimed warm-up so the framework's own allocations between runs are not included.
template <class Fn>
void RunCounted(benchmark::State& state, Fn&& fn) {
  constexpr int kProbe = 1000;
  const long before = test::AllocationCount();
  for (int i = 0; i < kProbe; ++i) fn();
  const long allocations = test::AllocationCount() - before;
  for (auto _ : state) fn();
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["allocs/item"] =
      benchmark::Counter(static_cast<double>(allocations) / kProbe);
}

}  // namespace coapgate::codec
