// Triage: everything the CoAP protocol alone decides about one received datagram, before
// any device identity, topic policy or sink is involved. The engine runs it first and acts
// on the result; the `coapgate dissect` demo prints it.
//
// The order of checks is part of the contract (docs/protocol.md, RFC 7252 §4–§5):
//   1. parse (format errors → RST for CON, drop otherwise; no header / Ver≠1 → drop);
//   2. message kind (ping → RST; stray ACK/RST → drop; reserved code class or unsolicited
//      response → RST for CON, drop for NON);
//   3. options (4.02 for CON, RST for NON; then 5.05 proxying, 4.12 preconditions);
//   4. route and method (4.04 unknown path or GET on /, /data; 4.05 other methods);
//   5. payload size (4.13 with Size1).
// What remains is Action::kRequest, for the engine: device identity (4.01), then topic
// (Request::topic_status, 4.00), then the sinks.
//
// Thread contract: pure; any thread. Lifetime: views inside point into the datagram.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "codec/encoder.h"
#include "codec/message.h"
#include "codec/request.h"

namespace coapgate::codec {

struct TriageLimits {
  size_t max_payload = 1024;  ///< docs/configuration.md coap.max_payload
};

enum class Action : uint8_t {
  kDrop,     ///< send nothing; count `reason`
  kReset,    ///< send an RST with message.message_id
  kRespond,  ///< send response_code (piggybacked ACK for CON, NON for NON)
  kRequest,  ///< a well-formed request on a known route: the application takes over
};

enum class Reason : uint8_t {
  kNone,                 ///< Action::kRequest
  kTooShort,             ///< < 4 bytes
  kBadVersion,           ///< Ver != 1
  kFormatError,          ///< RFC 7252 §3 violation (see parse_errc), incl. an Empty NON
  kPing,                 ///< Empty CON
  kStrayAckOrReset,      ///< ACK/RST: coapgate sends no CON, so none is expected
  kReservedCode,        ///< code class 1, 3, 6 or 7 in a CON/NON
  kUnsolicitedResponse,  ///< a response code in a CON/NON
  kBadOption,            ///< unrecognized/repeated/out-of-range critical option
  kProxyingNotSupported,
  kPreconditionFailed,
  kNotFound,
  kMethodNotAllowed,
  kPayloadTooLarge,
};

[[nodiscard]] std::string_view ToString(Reason reason) noexcept;

struct Triage {
  Action action = Action::kDrop;
  Reason reason = Reason::kNone;
  uint8_t response_code = 0;  ///< for Action::kRespond
  ParseErrc parse_errc{};     ///< for Reason::kFormatError, kTooShort, kBadVersion
  uint16_t option_number = 0; ///< for option-related reasons
  MessageView message{};      ///< valid unless the datagram failed to parse
  Request request{};          ///< valid for kRequest (and the route/method/size reasons)
};

[[nodiscard]] Triage TriageDatagram(std::span<const std::byte> datagram,
                                    const TriageLimits& limits) noexcept;

Triage TriageDatagram(std::vector<std::byte>&&, const TriageLimits&) = delete;

// Encodes the protocol's own answer to a kReset or kRespond triage into `out`: the RST, or
// the error response with the code's name as diagnostic payload (RFC 7252 §5.5.2) and, for
// 4.13, Size1 = limits.max_payload. `non_message_id` is used when the request was a NON.
// Returns 0 for kDrop and kRequest, which have no protocol answer.
[[nodiscard]] Result<size_t, EncodeErrc> EncodeTriageReply(const Triage& triage,
                                                           const TriageLimits& limits,
                                                           uint16_t non_message_id,
                                                           std::span<std::byte> out) noexcept;

}  // namespace coapgate::codec
