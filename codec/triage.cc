#include "codec/triage.h"

#include "codec/code.h"

namespace coapgate::codec {
namespace {

// The outcome setters mutate the one Triage that TriageDatagram returns, so every return
// path names the same object and the ~100-byte result is built in place (NRVO), never copied.
void SetOutcome(Triage& t, Action action, Reason reason, uint8_t code = 0) noexcept {
  t.action = action;
  t.reason = reason;
  t.response_code = code;
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
    if (e.errc == ParseErrc::kTooShort) {
      SetOutcome(t, Action::kDrop, Reason::kTooShort);
    } else if (e.errc == ParseErrc::kBadVersion) {
      SetOutcome(t, Action::kDrop, Reason::kBadVersion);
    } else {
      SetOutcome(t, DispositionOf(e) == Disposition::kReset ? Action::kReset : Action::kDrop,
                 Reason::kFormatError);
    }
    return t;
  }
  t.message = *parsed;
  const MessageView& m = t.message;
  const Action reject = m.confirmable() ? Action::kReset : Action::kDrop;

  if (m.type == MessageType::kAcknowledgement || m.type == MessageType::kReset) {
    SetOutcome(t, Action::kDrop, Reason::kStrayAckOrReset);
    return t;
  }
  if (m.code == code::kEmpty) {
    // RFC 7252 §4.3: a NON must not be Empty; §4.2: an Empty CON is a ping, answered by RST.
    SetOutcome(t, reject, m.confirmable() ? Reason::kPing : Reason::kFormatError);
    return t;
  }
  if (IsReservedClass(m.code)) {
    SetOutcome(t, reject, Reason::kReservedCode);
    return t;
  }
  if (!IsRequestCode(m.code)) {
    SetOutcome(t, reject, Reason::kUnsolicitedResponse);
    return t;
  }

  auto request = DecodeRequest(m);
  if (!request) {
    t.option_number = request.error().option_number;
    const Reason reason = ReasonOf(request.error().errc);
    // RFC 7252 §5.4.1: 4.02 for a CON request; a NON with such an option is rejected.
    if (reason == Reason::kBadOption && !m.confirmable()) {
      SetOutcome(t, Action::kReset, reason);
    } else {
      SetOutcome(t, Action::kRespond, reason, ResponseCodeOf(request.error().errc));
    }
    return t;
  }
  t.request = *request;

  const Route route = t.request.route;
  const uint8_t method = m.code;
  if (route == Route::kUnknown) {
    SetOutcome(t, Action::kRespond, Reason::kNotFound, code::kNotFound);
  } else if (route == Route::kBootstrap && method != code::kGet) {
    SetOutcome(t, Action::kRespond, Reason::kMethodNotAllowed, code::kMethodNotAllowed);
  } else if (route != Route::kBootstrap && method == code::kGet) {
    // The reference system answers GET on its ingest path with 4.04 "Not Found".
    SetOutcome(t, Action::kRespond, Reason::kNotFound, code::kNotFound);
  } else if (route != Route::kBootstrap && method != code::kPost) {
    SetOutcome(t, Action::kRespond, Reason::kMethodNotAllowed, code::kMethodNotAllowed);
  } else if (m.payload.size() > limits.max_payload) {
    SetOutcome(t, Action::kRespond, Reason::kPayloadTooLarge, code::kRequestEntityTooLarge);
  } else {
    SetOutcome(t, Action::kRequest, Reason::kNone);
  }
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
