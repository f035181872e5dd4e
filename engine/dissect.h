// Dissect: a human-readable account of what coapgate's codec makes of one datagram (header,
// options, payload, the protocol's verdict, and the exact reply bytes). Backs
// `coapgate dissect`; control plane only (allocates freely).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec/result.h"
#include "codec/triage.h"

namespace coapgate::engine {

// Hex text to bytes; spaces, colons and a leading "0x" are allowed between byte pairs.
// Errors name the offending position.
[[nodiscard]] Result<std::vector<std::byte>, std::string> ParseHex(std::string_view text);

// Standard base64 (RFC 4648 §4, '=' padding optional, whitespace ignored) to bytes.
[[nodiscard]] Result<std::vector<std::byte>, std::string> ParseBase64(std::string_view text);

[[nodiscard]] std::string HexString(std::span<const std::byte> bytes);

[[nodiscard]] std::string Dissect(std::span<const std::byte> datagram,
                                  const codec::TriageLimits& limits);

}  // namespace coapgate::engine
