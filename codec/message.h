// MessageView: a read-only view of one CoAP message (RFC 7252 §3) inside a datagram, and
// ParseMessage, the single validating pass that produces it.
//
// Thread contract: pure functions over caller-owned bytes; safe from any thread.
// Lifetime: every span in a MessageView points into the datagram passed to ParseMessage and
// is valid only while those bytes are (for the engine: while the receive-buffer slot is held).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coapgate::codec {

enum class MessageType : uint8_t {
  kConfirmable = 0,
  kNonConfirmable = 1,
  kAcknowledgement = 2,
  kReset = 3,
};

inline constexpr size_t kHeaderSize = 4;
inline constexpr size_t kMaxTokenLength = 8;
inline constexpr std::byte kPayloadMarker{0xff};

// Why a datagram is not a well-formed CoAP message.
enum class ParseErrc : uint8_t {
  kTooShort,              ///< fewer than 4 bytes: there is no Message ID to answer
  kBadVersion,            ///< Ver != 1: RFC 7252 §3 says silently ignore
  kReservedTokenLength,   ///< TKL 9..15 (13/14 are RFC 8974 extended tokens, unsupported)
  kTruncatedToken,        ///< TKL larger than the bytes after the header
  kTruncatedOption,       ///< an option's extended delta/length or value runs past the end
  kReservedNibble,        ///< delta or length nibble 15 in an option header
  kOptionNumberOverflow,  ///< accumulated option number above 65535
  kEmptyPayload,          ///< payload marker followed by zero bytes
  kNonEmptyEmpty,         ///< code 0.00 with a token, options or a payload
};

[[nodiscard]] std::string_view ToString(ParseErrc errc) noexcept;

// A parse failure, with as much of the header as could be read so that the caller can
// reject a Confirmable message with a matching Reset (RFC 7252 §4.2).
struct ParseError {
  ParseErrc errc;
  MessageType type;     ///< meaningful unless errc is kTooShort or kBadVersion
  uint16_t message_id;  ///< meaningful unless errc is kTooShort or kBadVersion
};

// What the protocol requires for a datagram that failed to parse.
enum class Disposition : uint8_t {
  kDrop,   ///< silently ignore (and count)
  kReset,  ///< send an RST carrying the message's MID
};

// RFC 7252 §4.2/§4.3: a format error in a CON is answered with RST; in anything else, and
// when there is no usable header at all, the datagram is dropped.
[[nodiscard]] Disposition DispositionOf(const ParseError& error) noexcept;

struct MessageView {
  MessageType type;
  uint8_t code;
  uint16_t message_id;
  std::span<const std::byte> token;    ///< 0..8 bytes
  std::span<const std::byte> options;  ///< the raw option bytes, validated (see OptionIterator)
  std::span<const std::byte> payload;  ///< empty, or the non-empty bytes after the marker

  [[nodiscard]] bool confirmable() const noexcept { return type == MessageType::kConfirmable; }
};

// Validates the whole datagram's structure in one pass (header, token, every option header,
// payload marker) without copying or allocating. The code is not judged here (see Triage). On success, OptionIterator over `options` can no
// longer fail: that is the invariant the rest of the codec relies on.
[[nodiscard]] Result<MessageView, ParseError> ParseMessage(
    std::span<const std::byte> datagram) noexcept;

// Reads only the fixed header and the token, for a datagram known to be cut short (larger
// than the receive buffer): enough to answer it (4.13) without trusting the rest. The
// result has empty options and payload.
[[nodiscard]] Result<MessageView, ParseError> ParseHeader(
    std::span<const std::byte> datagram) noexcept;

// A MessageView must not outlive its bytes: refuse temporaries that own them.
Result<MessageView, ParseError> ParseMessage(std::vector<std::byte>&&) = delete;
Result<MessageView, ParseError> ParseHeader(std::vector<std::byte>&&) = delete;

}  // namespace coapgate::codec
