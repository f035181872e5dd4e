// Mix64: splitmix64's finalizer, the one integer mixer coapgate's hash tables share (dedup
// keys, registry indexes, IP addresses). A bijection on 64 bits in which every input bit
// reaches every output bit: keys that differ only in a few low bits (the last digits of an
// ICCID, a port, a MID, the host part of an address) still spread over a power-of-two index
// that takes the low bits.
#pragma once

#include <cstdint>

namespace coapgate {

[[nodiscard]] constexpr uint64_t Mix64(uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace coapgate
