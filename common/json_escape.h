// JSON string escaping and the UTF-8 decoding step it rests on: one rule for every JSON text
// coapgate writes (envelopes, ERROR events, Energy Saver keys, constants and strings).
//
// '"' and '\' get a backslash, control characters (< 0x20) become \u00XX (lowercase hex),
// well-formed UTF-8 passes through, and each maximal ill-formed subpart (Unicode §3.9) is
// written as the six characters \ufffd. Pure functions; no allocation; any thread.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

namespace coapgate {

// One step of UTF-8 decoding with "maximal subpart" replacement: a well-formed sequence
// (ASCII included), or the ill-formed prefix that stands for one U+FFFD.
// REQUIRES: !s.empty().
struct Utf8Step {
  size_t length;  ///< >= 1
  bool valid;
};
[[nodiscard]] Utf8Step NextUtf8(std::string_view s) noexcept;

// Escapes `in` for use inside a JSON string (without the quotes). Returns the chars
// written, or 0 if `out` is too small (ambiguous only for empty input, which writes nothing);
// never writes past out.size().
[[nodiscard]] size_t JsonEscape(std::string_view in, std::span<char> out) noexcept;

// What JsonEscape(in, …) writes; at most 6 * in.size().
[[nodiscard]] size_t JsonEscapedLength(std::string_view in) noexcept;

}  // namespace coapgate
