// Option numbers and the option table coapgate recognizes (RFC 7252 §5.4, §5.10, §12.2).
// "Recognized" is a server decision: an unrecognized critical option in a request is
// rejected with 4.02, an unrecognized elective one ignored (RFC 7252 §5.4.1).
#pragma once

#include <cstdint>
#include <string_view>

namespace coapgate::codec {

namespace option {
inline constexpr uint16_t kIfMatch = 1;
inline constexpr uint16_t kUriHost = 3;
inline constexpr uint16_t kETag = 4;
inline constexpr uint16_t kIfNoneMatch = 5;
inline constexpr uint16_t kObserve = 6;
inline constexpr uint16_t kUriPort = 7;
inline constexpr uint16_t kLocationPath = 8;
inline constexpr uint16_t kOscore = 9;
inline constexpr uint16_t kUriPath = 11;
inline constexpr uint16_t kContentFormat = 12;
inline constexpr uint16_t kMaxAge = 14;
inline constexpr uint16_t kUriQuery = 15;
inline constexpr uint16_t kAccept = 17;
inline constexpr uint16_t kLocationQuery = 20;
inline constexpr uint16_t kBlock2 = 23;
inline constexpr uint16_t kBlock1 = 27;
inline constexpr uint16_t kSize2 = 28;
inline constexpr uint16_t kProxyUri = 35;
inline constexpr uint16_t kProxyScheme = 39;
inline constexpr uint16_t kSize1 = 60;
inline constexpr uint16_t kEcho = 252;
inline constexpr uint16_t kNoResponse = 258;
inline constexpr uint16_t kRequestTag = 292;
}  // namespace option

// Odd option numbers are critical (RFC 7252 §5.4.6).
[[nodiscard]] constexpr bool IsCritical(uint16_t number) noexcept { return (number & 1) != 0; }

struct OptionDefinition {
  uint16_t number;
  bool repeatable;
  uint16_t min_length;
  uint16_t max_length;
  std::string_view name;
};

// The definition of an option coapgate recognizes, or nullptr. Block1/Block2 and OSCORE are
// deliberately absent: coapgate implements neither block-wise transfer nor OSCORE, so a
// request that depends on them (they are critical) is answered 4.02 rather than misread.
[[nodiscard]] const OptionDefinition* FindOptionDefinition(uint16_t number) noexcept;

}  // namespace coapgate::codec
