#include "codec/triage.h"

#include "codec/code.h"

namespace coapgate::codec {
namespace {

[[nodiscard]] Triage Drop(Triage t, Reason reason) noexcept {
  t.action = Action::kDrop;
  t.reason = reason;
  return t;
}

[[nodiscard]] Triage Reset(Triage t, Reason reason) noexcept {
  t.action = Action::kReset;
  t.reason = reason;
  return t;
}

[[nodiscard]] Triage Respond(Triage t, Reason reason, uint8_t code) noexcept {
  t.action = Action::kRespond;
  t.reason = reason;
  t.response_code = code;
  return t;
}

[[nodiscard]] Reason ReasonOf(RequestErrc errc) noexcept {
  switch (errc) {
    case RequestErrc::kBadOption: return Reason::kBadOption;
    case RequestErrc::kProxyingNotSupported: return Reason::kProxyingNotSupported;
    case RequestErrc::kPreconditionFailed: return Reason::kPreconditionFailed;
  }
  return Reason::kBadOption;
}

}  // namespace

std::string_view ToString(Reason reason) noexcept {
  switch (reason) {
    case Reason::kNone: return "none";
    case Reason::kTooShort: return "too_short";
    case Reason::kBadVersion: return "bad_version";
    case Reason::kFormatError: return "format_error";
    case Reason::kPing: return "ping";
    case Reason::kStrayAckOrReset: return "stray_ack_or_reset";
    case Reason::kReservedCode: return "reserved_code";
    case Reason::kUnsolicitedResponse: return "unsolicited_response";
    case Reason::kBadOption: return "bad_option";
    case Reason::kProxyingNotSupported: return "proxying_not_supported";
    case Reason::kPreconditionFailed: return "precondition_failed";
    case Reason::kNotFound: return "not_found";
    case Reason::kMethodNotAllowed: return "method_not_allowed";
    case Reason::kPayloadTooLarge: return "payload_too_large";
  }
  return "unknown";
}

Triage TriageDatagram(std::span<const std::byte> datagram, const TriageLimits& limits) noexcept {
  Triage t;
  auto parsed = ParseMessage(datagram);
  if (!parsed) {
    const ParseError& e = parsed.error();
    t.parse_errc = e.errc;
    t.message.type = e.type;
    t.message.message_id = e.message_id;
    if (e.errc == ParseErrc::kTooShort) return Drop(t, Reason::kTooShort);
    if (e.errc == ParseErrc::kBadVersion) return Drop(t, Reason::kBadVersion);
    return DispositionOf(e) == Disposition::kReset ? Reset(t, Reason::kFormatError)
                                                   : Drop(t, Reason::kFormatError);
  }
  t.message = *parsed;
  const MessageView& m = t.message;
  const bool con = m.confirmable();

  if (m.type == MessageType::kAcknowledgement || m.type == MessageType::kReset) {
    return Drop(t, Reason::kStrayAckOrReset);
  }
  if (m.code == code::kEmpty) {
    // RFC 7252 §4.3: a NON must not be Empty; §4.2: an Empty CON is a ping, answered by RST.
    return con ? Reset(t, Reason::kPing) : Drop(t, Reason::kFormatError);
  }
  if (IsReservedClass(m.code)) {
    return con ? Reset(t, Reason::kReservedCode) : Drop(t, Reason::kReservedCode);
  }
  if (!IsRequestCode(m.code)) {
    return con ? Reset(t, Reason::kUnsolicitedResponse) : Drop(t, Reason::kUnsolicitedResponse);
  }

  auto request = DecodeRequest(m);
  if (!request) {
    t.option_number = request.error().option_number;
    const Reason reason = ReasonOf(request.error().errc);
    // RFC 7252 §5.4.1: 4.02 for a CON request; a NON with such an option is rejected.
    if (reason == Reason::kBadOption && !con) return Reset(t, reason);
    return Respond(t, reason, ResponseCodeOf(request.error().errc));
  }
  t.request = *request;

  const Route route = t.request.route;
  const uint8_t method = m.code;
  if (route == Route::kUnknown) return Respond(t, Reason::kNotFound, code::kNotFound);
  if (route == Route::kBootstrap) {
    if (method != code::kGet) return Respond(t, Reason::kMethodNotAllowed, code::kMethodNotAllowed);
  } else if (method == code::kGet) {
    // The reference system answers GET on its ingest path with 4.04 "Not Found".
    return Respond(t, Reason::kNotFound, code::kNotFound);
  } else if (method != code::kPost) {
    return Respond(t, Reason::kMethodNotAllowed, code::kMethodNotAllowed);
  }
  if (m.payload.size() > limits.max_payload) {
    return Respond(t, Reason::kPayloadTooLarge, code::kRequestEntityTooLarge);
  }
  t.action = Action::kRequest;
  t.reason = Reason::kNone;
  return t;
}

Result<size_t, EncodeErrc> EncodeTriageReply(const Triage& triage, const TriageLimits& limits,
                                             uint16_t non_message_id,
                                             std::span<std::byte> out) noexcept {
  if (triage.action == Action::kReset) return EncodeReset(triage.message.message_id, out);
  if (triage.action != Action::kRespond) return size_t{0};
  OutgoingMessage reply = ResponseTo(triage.message, triage.response_code, non_message_id);
  if (triage.response_code == code::kRequestEntityTooLarge) {
    reply.size1 = static_cast<uint32_t>(limits.max_payload);
  }
  const std::string_view diagnostic = CodeName(triage.response_code);
  reply.payload = std::as_bytes(std::span<const char>(diagnostic.data(), diagnostic.size()));
  return EncodeMessage(reply, out);
}

}  // namespace coapgate::codec
