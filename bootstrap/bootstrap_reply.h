// The bytes of a GET /bootstrap response (docs/bootstrap-and-dtls.md, reference §3.2/§3.4): the 2.05 payload
// "ICCID,PSK,COAPS_URL", the JSON error bodies of 4.01 and 5.00, and the whole datagram.
//
// The reply must suit the 1NCE C SDK, which keeps the datagram in a 150-byte buffer and finds
// the credentials with strstr(datagram, "89") followed by strtok(","):
//   - bytes 0x38 0x39 ("89") before the payload would be taken for the ICCID's start;
//   - a 0x00 byte before the payload ends strstr's search early, so nothing is found;
//   - a datagram of 150 bytes or more is cut, and then the SDK's string has no terminator.
// When the server picks the MID (NON replies) it picks one that keeps the first two rules;
// for CON the reply is a piggybacked ACK and must carry the device's own MID, whatever its
// bytes are (the SDK sends NON, so it never sees that case). The token is the device's too
// (the SDK sends none).
//
// Thread contract: pure functions over caller-owned buffers; any thread; no allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "codec/encoder.h"
#include "common/result.h"

namespace coapgate::bootstrap {

// The C SDK's receive buffer (reference §3.2): every bootstrap datagram should be shorter.
inline constexpr size_t kBootstrapDatagramLimit = 150;
// RFC 7252 §12.3 "application/json", announced on the error bodies only. The 2.05 payload is
// text/csv-like, which has no registered number: reference §3.2 recommends no Content-Format.
inline constexpr uint32_t kContentFormatJson = 50;

// Writes "ICCID,PSK,URL" to the front of `out` and returns its length, or 0 when `out` is too
// small or a field is empty or contains a ',' (devices split the payload at commas, so such a
// reply would hand them a wrong key).
[[nodiscard]] size_t FormatBootstrapPayload(std::string_view iccid, std::string_view psk,
                                            std::string_view coaps_url,
                                            std::span<char> out) noexcept;

enum class BootstrapError : uint8_t {
  kUnauthorized,  ///< 4.01: unknown source address or inactive device
  kServerError,   ///< 5.00: the key could not be generated or stored
};

// The response code that goes with `error` (4.01 or 5.00).
[[nodiscard]] uint8_t BootstrapErrorCode(BootstrapError error) noexcept;
// The JSON body `{"statusText":...,"errors":[{"code":...,"message":...}]}` (reference §3.4).
// The view is a static string. The bodies contain no "89" either, so the C SDK reports a
// parse error for them instead of reading a key out of the JSON.
[[nodiscard]] std::string_view BootstrapErrorBody(BootstrapError error) noexcept;

// The request being answered. `token` is echoed; its bytes must stay valid during the call.
struct BootstrapExchange {
  bool confirmable;
  uint16_t message_id;  ///< the request's MID: echoed in the ACK of a CON
  std::span<const std::byte> token;
};

// The first MID at or after `candidate` (wrapping) that a NON reply echoing `token` may
// carry: neither MID byte is 0x00, the MID is not 0x38 0x39, and its low byte is not 0x38
// when the token starts with 0x39. The byte before the MID is the response code, which is
// never 0x38, and the byte after it, when there is no token, is an option header or the
// payload marker, never 0x39. Such an MID is at most a few steps away from `candidate`.
[[nodiscard]] uint16_t SafeBootstrapMessageId(uint16_t candidate,
                                              std::span<const std::byte> token) noexcept;

struct EncodedBootstrapReply {
  size_t size;          ///< bytes written to the front of `out`
  uint16_t message_id;  ///< the MID in the reply (the request's for CON)
  // size >= kBootstrapDatagramLimit: the C SDK would truncate it. The reply is still written;
  // the caller should warn (the configured coaps_url is too long for such devices).
  bool oversized;
};

// A 2.05 Content carrying `payload` (FormatBootstrapPayload's text), without Content-Format:
// a piggybacked ACK with the request's MID for a CON, otherwise a NON with
// SafeBootstrapMessageId(non_message_id, token).
[[nodiscard]] Result<EncodedBootstrapReply, codec::EncodeErrc> EncodeBootstrapReply(
    const BootstrapExchange& exchange, uint16_t non_message_id, std::string_view payload,
    std::span<std::byte> out) noexcept;

// A 5.03 Service Unavailable with Max-Age `max_age_s` and the text "Service Unavailable"
// (as the shard's own 5.03s, no Content-Format): the worker did not reach
// the request within the response budget, and the device should retry after Max-Age.
[[nodiscard]] Result<EncodedBootstrapReply, codec::EncodeErrc> EncodeBootstrapBusyReply(
    const BootstrapExchange& exchange, uint16_t non_message_id, uint32_t max_age_s,
    std::span<std::byte> out) noexcept;

// The same for a 4.01 or 5.00 carrying BootstrapErrorBody(error) and Content-Format 50.
[[nodiscard]] Result<EncodedBootstrapReply, codec::EncodeErrc> EncodeBootstrapErrorReply(
    const BootstrapExchange& exchange, uint16_t non_message_id, BootstrapError error,
    std::span<std::byte> out) noexcept;

}  // namespace coapgate::bootstrap
