// The downstream message format (docs/downstream.md): the TELEMETRY_DATA envelope of the reference
// system (reference 1nce-coap-endpoint.md §6.1), its ERROR and LOCATION events (§5.5, §6.2),
// and the message id that makes them idempotent (docs/delivery.md, reliability reference I6).
//
// Thread contract: pure functions; any thread. The formatters write into caller buffers,
// never past them, never allocate and never throw: they run once per message on the
// publisher threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "common/base64.h"
#include "common/json_escape.h"

namespace coapgate::sinks {

// A 128-bit message id, printed as a lowercase UUID-shaped string (8-4-4-4-12 hex digits of
// hi then lo, 36 chars). It is a hash, not an RFC 9562 UUID: no version or variant bits.
struct MessageId {
  uint64_t hi;
  uint64_t lo;

  friend bool operator==(const MessageId&, const MessageId&) = default;
};

// The stable idempotency key of one device request: the same request retransmitted (same
// device, MID, token, topic and payload) gets the same id, also across a coapgate restart, so
// consumers can drop duplicates; different requests get different ids with overwhelming
// probability. Two requests equal in all five inputs are indistinguishable by design.
//
// XXH3-128 (seed 0) over a versioned, length-prefixed encoding of the inputs; see
// envelope.cc. The encoding is a persisted format: changing it changes every id, so
// consumers would stop recognising duplicates across the upgrade.
[[nodiscard]] MessageId MakeMessageId(std::string_view iccid, uint16_t message_id,
                                      std::span<const std::byte> token, std::string_view topic,
                                      std::span<const std::byte> payload) noexcept;

inline constexpr size_t kMessageIdTextLength = 36;

// Writes the 36-char text form to out[0..36) and returns 36. No terminating NUL.
// REQUIRES: `out` has room for kMessageIdTextLength chars.
size_t FormatMessageId(const MessageId& id, char* out) noexcept;

// The fields of one TELEMETRY_DATA envelope. Views only: they must outlive the call.
struct EnvelopeFields {
  MessageId id;
  uint64_t received_ms;  ///< Unix epoch ms, printed as a JSON string, as the reference does
  std::string_view iccid;
  std::string_view imsi;  ///< empty: no "imsi" member in "device"
  std::string_view ip;    ///< as text: "100.91.200.24" or an IPv6 address
  std::string_view topic;               ///< empty: no "topic" member in "payload"
  std::span<const std::byte> payload;   ///< raw bytes, sent as base64 (ignored with json_payload)
  // Non-empty only when the Energy Saver translated the payload: then "payload" is
  // {"type":"JSON","value":<this, verbatim>}. REQUIRES: one valid JSON value (our translator's
  // output); it is not re-validated here.
  std::string_view json_payload;
};

// Writes one envelope, one line, no spaces, keys in this order:
//   {"id":"…","type":"TELEMETRY_DATA","source":"COAP","version":"1.0.0","received":"…",
//    "device":{"iccid":"…","imsi":"…","ip":"…"},
//    "payload":{"type":"STRING","encoding":"base64","value":"…","topic":"…"}}
// or, with json_payload, "payload":{"type":"JSON","value":{…},"topic":"…"}.
// The text fields (iccid, imsi, ip, topic) go through JsonEscape.
// Returns the bytes written, or 0 if `out` is too small (then out's contents are
// unspecified, but nothing past out.size() was touched).
[[nodiscard]] size_t FormatTelemetryEnvelope(const EnvelopeFields& f,
                                             std::span<char> out) noexcept;

// The size FormatTelemetryEnvelope needs for these fields; it is exact (the formatter writes
// precisely this many bytes), so it is also the smallest buffer that works. Costs one scan
// of the text fields, none of the payload.
[[nodiscard]] size_t MaxEnvelopeSize(const EnvelopeFields& f) noexcept;

// The ERROR event of a message the Energy Saver could not translate (docs/downstream.md, reference §5.5),
// one line: {"id":…,"type":"ERROR","source":"COAP","version":"1.0.0","received":…,
// "device":{…},"error":{"id":…,"type":"DEVICE","message":"Translator[UserPayloadError]",
// "description":<description>,"payloadExists":true},"payload":{"type":"STRING",
// "encoding":"base64","value":<raw payload>,"topic":…}}. The "payload" member is coapgate's:
// the raw bytes travel with the error so nothing is lost. f.json_payload is ignored.
// Returns the bytes written, or 0 if `out` is too small.
[[nodiscard]] size_t FormatErrorEnvelope(const EnvelopeFields& f, std::string_view description,
                                         std::span<char> out) noexcept;
// Exact size FormatErrorEnvelope needs.
[[nodiscard]] size_t MaxErrorEnvelopeSize(const EnvelopeFields& f,
                                          std::string_view description) noexcept;

// The id of the LOCATION event derived from message `telemetry`: stable like the message id
// (same request, same id, across restarts), distinct from it and from every other message's
// ids, so a consumer that keys events by id keeps both. XXH3-128 over a domain string and
// the 16 bytes of `telemetry`; a persisted format like MakeMessageId's.
[[nodiscard]] MessageId MakeLocationId(const MessageId& telemetry) noexcept;

// The LOCATION event of a translated message whose template marks a longitude and a latitude
// field (custom_type), one line:
//   {"id":…,"type":"LOCATION","source":"COAP","version":"1.0.0","received":…,
//    "device":{…},"location":{"source":"GPS","coordinates":["<lon>","<lat>"]}}
// `longitude` and `latitude` are the numbers as the translated JSON prints them; they are
// written as JSON strings (escaped, though number text needs none). f.id is printed as
// given: pass MakeLocationId(message id). f.topic, f.payload and f.json_payload are ignored.
// Returns the bytes written, or 0 if `out` is too small.
[[nodiscard]] size_t FormatLocationEnvelope(const EnvelopeFields& f, std::string_view longitude,
                                            std::string_view latitude,
                                            std::span<char> out) noexcept;
// Exact size FormatLocationEnvelope needs.
[[nodiscard]] size_t MaxLocationEnvelopeSize(const EnvelopeFields& f, std::string_view longitude,
                                             std::string_view latitude) noexcept;

// The id of a device's LIFECYCLE DEVICE_FIRST_TIME_REGISTERED event: a function of the ICCID
// alone (there is one such event per device), so the event sent again after a failure, or by
// a second node in a rare race (docs/cluster.md), carries the same id and a consumer keying by
// id keeps one. XXH3-128 over a domain string and the ICCID; a persisted format.
[[nodiscard]] MessageId MakeLifecycleId(std::string_view iccid) noexcept;

// The LIFECYCLE event of a device's first interaction (reference §6.2), one line:
//   {"id":…,"type":"LIFECYCLE","version":"1.0.0","received":…,"device":{…},
//    "lifecycle":{"type":"DEVICE_FIRST_TIME_REGISTERED",
//                 "message":"New Device successfully registered for the first time - <iccid>"}}
// No "source": the reference gives it to TELEMETRY_DATA only, and the interaction may be a
// handshake or a bootstrap as well as a message. f.id is printed as given (MakeLifecycleId);
// f.topic, f.payload and f.json_payload are ignored. Returns the bytes written, or 0 if `out`
// is too small.
[[nodiscard]] size_t FormatLifecycleEnvelope(const EnvelopeFields& f, std::span<char> out) noexcept;
// Exact size FormatLifecycleEnvelope needs.
[[nodiscard]] size_t MaxLifecycleEnvelopeSize(const EnvelopeFields& f) noexcept;

// JSON string escaping, shared with every other JSON writer of coapgate.
using ::coapgate::JsonEscape;
using ::coapgate::JsonEscapedLength;
using ::coapgate::Base64Encode;
using ::coapgate::Base64Length;

}  // namespace coapgate::sinks
