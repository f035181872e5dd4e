// CoAP message codes (RFC 7252 §3, §12.1): a class in the top 3 bits, a detail in the low 5,
// written "c.dd". Codes are kept as raw bytes because a datagram may carry any of the 256
// values; the named constants are the ones coapgate receives or sends.
#pragma once

#include <cstdint>
#include <string_view>

namespace coapgate::codec {

[[nodiscard]] constexpr uint8_t MakeCode(unsigned cls, unsigned detail) noexcept {
  return static_cast<uint8_t>((cls << 5) | (detail & 0x1f));
}
[[nodiscard]] constexpr unsigned CodeClass(uint8_t code) noexcept { return code >> 5; }
[[nodiscard]] constexpr unsigned CodeDetail(uint8_t code) noexcept { return code & 0x1f; }

namespace code {
inline constexpr uint8_t kEmpty = MakeCode(0, 0);
inline constexpr uint8_t kGet = MakeCode(0, 1);
inline constexpr uint8_t kPost = MakeCode(0, 2);
inline constexpr uint8_t kPut = MakeCode(0, 3);
inline constexpr uint8_t kDelete = MakeCode(0, 4);
inline constexpr uint8_t kChanged = MakeCode(2, 4);
inline constexpr uint8_t kContent = MakeCode(2, 5);
inline constexpr uint8_t kBadRequest = MakeCode(4, 0);
inline constexpr uint8_t kUnauthorized = MakeCode(4, 1);
inline constexpr uint8_t kBadOption = MakeCode(4, 2);
inline constexpr uint8_t kNotFound = MakeCode(4, 4);
inline constexpr uint8_t kMethodNotAllowed = MakeCode(4, 5);
inline constexpr uint8_t kPreconditionFailed = MakeCode(4, 12);
inline constexpr uint8_t kRequestEntityTooLarge = MakeCode(4, 13);
inline constexpr uint8_t kInternalServerError = MakeCode(5, 0);
inline constexpr uint8_t kServiceUnavailable = MakeCode(5, 3);
inline constexpr uint8_t kProxyingNotSupported = MakeCode(5, 5);
}  // namespace code

// RFC 7252 §3: classes 0 (request), 2, 4 and 5 (responses) exist; 1, 3, 6 and 7 are
// reserved (RFC 8323 later gives 7 to CoAP over TCP signaling, never to UDP).
[[nodiscard]] constexpr bool IsReservedClass(uint8_t code) noexcept {
  const unsigned cls = CodeClass(code);
  return cls == 1 || cls == 3 || cls >= 6;
}
[[nodiscard]] constexpr bool IsRequestCode(uint8_t code) noexcept {
  return CodeClass(code) == 0 && code != code::kEmpty;
}
[[nodiscard]] constexpr bool IsResponseCode(uint8_t code) noexcept {
  const unsigned cls = CodeClass(code);
  return cls >= 2 && cls <= 5;
}

// The RFC 7252 §12.1 name of a code ("Not Found"), or "" for codes without one. Used as the
// diagnostic payload of error responses and in logs.
[[nodiscard]] std::string_view CodeName(uint8_t code) noexcept;

// The "c.dd" text of a code ("2.04", "4.01"), for logs and JSON answers; no allocation.
struct DottedCode {
  char text[4];
  [[nodiscard]] constexpr std::string_view view() const noexcept { return {text, 4}; }
};
[[nodiscard]] constexpr DottedCode Dotted(uint8_t code) noexcept {
  const unsigned detail = CodeDetail(code);
  return {{static_cast<char>('0' + CodeClass(code)), '.', static_cast<char>('0' + detail / 10),
           static_cast<char>('0' + detail % 10)}};
}
static_assert(Dotted(MakeCode(4, 13)).view() == "4.13");

}  // namespace coapgate::codec
