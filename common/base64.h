// Standard base64 (RFC 4648 §4): the encoder every event writer uses for payloads (TELEMETRY
// and ERROR events, raw MQTT), and the decoder of the `translate` command line. Pure
// functions, any thread; Base64Encode never allocates.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coapgate {

// Characters Base64Encode writes for `n` bytes ('=' padded).
[[nodiscard]] constexpr size_t Base64Length(size_t n) noexcept { return (n + 2) / 3 * 4; }

// Writes Base64Length(in.size()) chars and returns that count.
// REQUIRES: `out` has room for Base64Length(in.size()) chars.
size_t Base64Encode(std::span<const std::byte> in, char* out) noexcept;

// Base64 text to bytes; '=' padding optional, whitespace ignored. Errors name the position.
[[nodiscard]] Result<std::vector<std::byte>, std::string> ParseBase64(std::string_view text);

}  // namespace coapgate
