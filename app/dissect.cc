#include "app/dissect.h"

#include <fmt/format.h>

#include <cctype>

#include "codec/code.h"
#include "common/hex.h"
#include "codec/option_iterator.h"
#include "codec/option_number.h"

namespace coapgate::app {
namespace {

std::string_view TypeName(codec::MessageType type) {
  switch (type) {
    case codec::MessageType::kConfirmable: return "CON";
    case codec::MessageType::kNonConfirmable: return "NON";
    case codec::MessageType::kAcknowledgement: return "ACK";
    case codec::MessageType::kReset: return "RST";
  }
  return "?";
}

std::string CodeString(uint8_t code) {
  const std::string_view name = codec::CodeName(code);
  return fmt::format("{}.{:02d}{}{}", codec::CodeClass(code), codec::CodeDetail(code),
                     name.empty() ? "" : " ", name);
}

// Printable bytes as a quoted string, anything else as \xNN.
std::string Quoted(std::span<const std::byte> bytes) {
  std::string out = "\"";
  for (std::byte b : bytes) {
    const auto c = static_cast<unsigned char>(b);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  out += '"';
  return out;
}

std::string_view RouteName(codec::Route route) {
  switch (route) {
    case codec::Route::kRoot: return "/";
    case codec::Route::kData: return "/data";
    case codec::Route::kBootstrap: return "/bootstrap";
    case codec::Route::kUnknown: return "(unknown)";
  }
  return "?";
}

std::string_view ActionName(codec::Action action) {
  switch (action) {
    case codec::Action::kDrop: return "drop";
    case codec::Action::kReset: return "reset";
    case codec::Action::kRespond: return "respond";
    case codec::Action::kRequest: return "request";
  }
  return "?";
}

}  // namespace




std::string Dissect(std::span<const std::byte> datagram, const codec::TriageLimits& limits) {
  std::string out = fmt::format("datagram  {} bytes: {}\n", datagram.size(), HexString(datagram));
  const codec::Triage t = codec::TriageDatagram(datagram, limits);
  auto message = codec::ParseMessage(datagram);
  if (message) {
    const codec::MessageView& m = *message;
    out += fmt::format("header    {} {} mid={} token={}\n", TypeName(m.type), CodeString(m.code),
                       m.message_id, m.token.empty() ? "(none)" : HexString(m.token));
    for (const codec::OptionView& o : codec::Options(m)) {
      const codec::OptionDefinition* def = codec::FindOptionDefinition(o.number);
      out += fmt::format("option    {} {} {} {}\n", o.number,
                         def ? def->name : std::string_view("(unrecognized)"),
                         codec::IsCritical(o.number) ? "critical" : "elective", Quoted(o.value));
    }
    if (!m.payload.empty()) {
      out += fmt::format("payload   {} bytes {}\n", m.payload.size(), Quoted(m.payload));
    }
  } else {
    out += fmt::format("error     {}\n", codec::ToString(message.error().errc));
  }
  if (t.action == codec::Action::kRequest || t.reason == codec::Reason::kNotFound ||
      t.reason == codec::Reason::kMethodNotAllowed || t.reason == codec::Reason::kPayloadTooLarge) {
    const codec::Request& r = t.request;
    std::string_view topic = "absent";
    if (r.topic_status == codec::TopicStatus::kValid) topic = r.topic;
    if (r.topic_status == codec::TopicStatus::kInvalid) topic = "(invalid: 4.00)";
    out += fmt::format("request   route={} topic={}\n", RouteName(r.route), topic);
  }
  out += fmt::format("verdict   {} ({})", ActionName(t.action), codec::ToString(t.reason));
  if (t.action == codec::Action::kRespond) {
    out += ' ';
    out += CodeString(t.response_code);
  }
  if (t.option_number != 0) out += fmt::format(" option={}", t.option_number);
  if (t.action == codec::Action::kRequest) {
    out += "; next: device identity (4.01), topic (4.00), sinks (2.04/5.03)";
  }
  out += '\n';
  std::byte reply[256];
  auto n = codec::EncodeTriageReply(t, limits, /*non_message_id=*/0, reply);
  if (n && *n > 0) {
    out += fmt::format("reply     {}\n", HexString(std::span<const std::byte>(reply, *n)));
  }
  return out;
}

}  // namespace coapgate::app
