// EncodeMessage: writes a CoAP message coapgate sends (piggybacked ACK, NON response, RST)
// into a caller-provided buffer. Never allocates, never writes past `out`.
//
// Thread contract: pure; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "codec/message.h"

namespace coapgate::codec {

struct OutgoingMessage {
  MessageType type = MessageType::kAcknowledgement;
  uint8_t code = 0;
  uint16_t message_id = 0;
  std::span<const std::byte> token;  ///< at most 8 bytes
  // The only options a coapgate response carries, written in option-number order.
  std::optional<uint32_t> content_format;  ///< 12
  std::optional<uint32_t> max_age;         ///< 14 (seconds; RFC default 60 when absent)
  std::optional<uint32_t> size1;           ///< 60 (the largest payload accepted, with 4.13)
  std::span<const std::byte> payload;
};

enum class EncodeErrc : uint8_t {
  kBufferTooSmall,  ///< `out` cannot hold the message; nothing usable was written
  kTokenTooLong,    ///< more than 8 bytes
  kBadEmpty,        ///< code 0.00 (RST, empty ACK) with a token, options or payload
  kBadCode,         ///< a reserved code class
};

[[nodiscard]] std::string_view ToString(EncodeErrc errc) noexcept;

// Returns the number of bytes written to the front of `out`.
[[nodiscard]] Result<size_t, EncodeErrc> EncodeMessage(const OutgoingMessage& message,
                                                       std::span<std::byte> out) noexcept;

// The header of a response to `request`: a piggybacked ACK with the request's MID for a CON,
// or a NON carrying `non_message_id` (the sender's own fresh MID) for anything else. The
// token is echoed as a view into the request's datagram.
[[nodiscard]] OutgoingMessage ResponseTo(const MessageView& request, uint8_t code,
                                         uint16_t non_message_id) noexcept;

// An RST rejecting message `message_id` (RFC 7252 §4.2): always 4 bytes.
inline constexpr size_t kResetSize = 4;
[[nodiscard]] Result<size_t, EncodeErrc> EncodeReset(uint16_t message_id,
                                                     std::span<std::byte> out) noexcept;

}  // namespace coapgate::codec
