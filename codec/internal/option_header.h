// Decoding of one option header (RFC 7252 §3.1), shared by the validating pass in
// ParseMessage and by OptionIterator so that both read the format the same way.
// Internal to codec/.
#pragma once

#include <cstddef>
#include <cstdint>

namespace coapgate::codec::internal {

enum class OptionHeaderStatus : uint8_t { kOk, kPayloadMarker, kReservedNibble, kTruncated };

struct OptionHeader {
  uint32_t delta;   ///< up to 65804 (14 → 269 + 65535)
  uint32_t length;  ///< likewise
  size_t header_size;
};

// Reads the option header at `p` (REQUIRES: p < end). Extended bytes are read only after
// checking they are present; the value itself is checked by the caller.
[[nodiscard]] inline OptionHeaderStatus DecodeOptionHeader(const std::byte* p, const std::byte* end,
                                                           OptionHeader* out) noexcept {
  const auto first = static_cast<uint8_t>(*p);
  if (first == 0xff) return OptionHeaderStatus::kPayloadMarker;
  uint32_t nibbles[2] = {static_cast<uint32_t>(first >> 4), static_cast<uint32_t>(first & 0x0f)};
  const std::byte* q = p + 1;
  for (uint32_t& n : nibbles) {
    if (n == 15) return OptionHeaderStatus::kReservedNibble;
    if (n == 13) {
      if (end - q < 1) return OptionHeaderStatus::kTruncated;
      n = 13 + static_cast<uint8_t>(q[0]);
      q += 1;
    } else if (n == 14) {
      if (end - q < 2) return OptionHeaderStatus::kTruncated;
      n = 269 + (static_cast<uint32_t>(static_cast<uint8_t>(q[0])) << 8) +
          static_cast<uint8_t>(q[1]);
      q += 2;
    }
  }
  out->delta = nibbles[0];
  out->length = nibbles[1];
  out->header_size = static_cast<size_t>(q - p);
  return OptionHeaderStatus::kOk;
}

}  // namespace coapgate::codec::internal
