// Hexadecimal text <-> bytes: the one codec every room uses (device PSKs marked psk_format =
// hex, the dissect and translate command lines, the load generator's key files, the Energy
// Saver's hex constants). Pure functions, any thread. DecodeHex and HexDigitValue never
// allocate (the shards decode CSV keys with them); ParseHex and HexString are control plane.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coapgate {

// 0..15 for [0-9a-fA-F], -1 for anything else.
[[nodiscard]] constexpr int HexDigitValue(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// True for a non-empty, even-length run of hex digits and nothing else (the strict form a
// devices file's hex key must have).
[[nodiscard]] bool IsStrictHex(std::string_view text) noexcept;

// Decodes strict hex (see IsStrictHex) into `out`. Returns the bytes written; kBadHex for
// anything else, kTooLong when `out` cannot hold text.size() / 2 bytes. Allocation-free.
enum class HexErrc : uint8_t { kBadHex, kTooLong };
[[nodiscard]] Result<size_t, HexErrc> DecodeHex(std::string_view text,
                                                std::span<std::byte> out) noexcept;

// Lenient hex text to bytes, as a person types it: spaces, tabs, colons, newlines and "0x"
// prefixes may stand between byte pairs. Errors name the offending position.
[[nodiscard]] Result<std::vector<std::byte>, std::string> ParseHex(std::string_view text);

// "aa bb cc": lowercase pairs separated by one space.
[[nodiscard]] std::string HexString(std::span<const std::byte> bytes);

}  // namespace coapgate
