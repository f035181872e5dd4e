// DecodeRequest: what a parsed CoAP request asks of coapgate, read in one pass over its
// options: the route (Uri-Path), the `t` topic (Uri-Query or Location-Query), and whether
// the options can be honoured at all (RFC 7252 §5.4: unrecognized critical options,
// repeated non-repeatable options, out-of-range lengths; §5.7.2 proxying; §5.10.8
// preconditions).
//
// Thread contract: pure; any thread. Lifetime: Request::topic and QueryParam views point
// into the datagram the MessageView was parsed from.
#pragma once

#include <cstdint>
#include <string_view>

#include "codec/message.h"
#include "codec/option_iterator.h"
#include "codec/option_number.h"

namespace coapgate::codec {

enum class Route : uint8_t {
  kRoot,       ///< no Uri-Path, or exactly one empty segment (node-coap-client's "/")
  kData,       ///< "/data"
  kBootstrap,  ///< "/bootstrap"
  kUnknown,    ///< anything else
};

enum class TopicStatus : uint8_t {
  kAbsent,   ///< no `t`, or `t=` with an empty value
  kValid,    ///< Request::topic holds it
  kInvalid,  ///< too long, a character outside [A-Za-z0-9_/], "//", or `t` given twice
};

struct Request {
  uint8_t method = 0;
  Route route = Route::kUnknown;
  TopicStatus topic_status = TopicStatus::kAbsent;
  std::string_view topic;  ///< non-empty only when topic_status == kValid
};

enum class RequestErrc : uint8_t {
  kBadOption,              ///< 4.02: unrecognized/repeated/out-of-range critical option
  kProxyingNotSupported,   ///< 5.05: Proxy-Uri or Proxy-Scheme
  kPreconditionFailed,     ///< 4.12: If-None-Match, or If-Match naming an ETag
};

struct RequestError {
  RequestErrc errc;
  uint16_t option_number;  ///< the option that caused it
};

[[nodiscard]] std::string_view ToString(RequestErrc errc) noexcept;
[[nodiscard]] uint8_t ResponseCodeOf(RequestErrc errc) noexcept;

// REQUIRES: IsRequestCode(message.code).
// Elective options that are unrecognized, repeated or out of range are ignored, as
// RFC 7252 §5.4.1/§5.4.5 require; a Location-Query ignored that way is not read for `t`.
[[nodiscard]] Result<Request, RequestError> DecodeRequest(const MessageView& message) noexcept;

// One `key=value` query parameter (value empty when there is no '=').
struct QueryParam {
  uint16_t option_number;  ///< kUriQuery or kLocationQuery
  std::string_view key;
  std::string_view value;
};

// Splits a query option value at its first '='.
[[nodiscard]] QueryParam SplitQuery(const OptionView& option) noexcept;

// Calls f(QueryParam) for each Uri-Query and Location-Query option, in wire order.
template <class F>
void ForEachQuery(const MessageView& message, F&& f) {
  for (const OptionView& o : Options(message)) {
    if (o.number == option::kUriQuery || o.number == option::kLocationQuery) f(SplitQuery(o));
  }
}

}  // namespace coapgate::codec
