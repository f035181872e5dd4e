#include "codec/request.h"

#include "codec/code.h"
#include "codec/option_number.h"
#include "codec/topic.h"

namespace coapgate::codec {
namespace {

[[nodiscard]] bool Acceptable(const OptionDefinition* def, const OptionView& o,
                              bool repeated) noexcept {
  return def != nullptr && (!repeated || def->repeatable) && o.value.size() >= def->min_length &&
         o.value.size() <= def->max_length;
}

[[nodiscard]] bool IsQuery(uint16_t number) noexcept {
  return number == option::kUriQuery || number == option::kLocationQuery;
}

[[nodiscard]] Route RouteOf(unsigned segments, std::string_view first) noexcept {
  if (segments == 0) return Route::kRoot;
  if (segments > 1) return Route::kUnknown;
  if (first.empty()) return Route::kRoot;
  if (first == "data") return Route::kData;
  if (first == "bootstrap") return Route::kBootstrap;
  return Route::kUnknown;
}

}  // namespace

std::string_view ToString(RequestErrc errc) noexcept {
  switch (errc) {
    case RequestErrc::kBadOption: return "bad_option";
    case RequestErrc::kProxyingNotSupported: return "proxying_not_supported";
    case RequestErrc::kPreconditionFailed: return "precondition_failed";
  }
  return "unknown";
}

uint8_t ResponseCodeOf(RequestErrc errc) noexcept {
  switch (errc) {
    case RequestErrc::kBadOption: return code::kBadOption;
    case RequestErrc::kProxyingNotSupported: return code::kProxyingNotSupported;
    case RequestErrc::kPreconditionFailed: return code::kPreconditionFailed;
  }
  return code::kInternalServerError;
}

QueryParam SplitQuery(const OptionView& option) noexcept {
  const std::string_view text = option.AsString();
  const size_t eq = text.find('=');
  if (eq == std::string_view::npos) return {option.number, text, {}};
  return {option.number, text.substr(0, eq), text.substr(eq + 1)};
}

Result<Request, RequestError> DecodeRequest(const MessageView& message) noexcept {
  Request request;
  request.method = message.code;
  unsigned path_segments = 0;
  std::string_view first_segment;
  unsigned topics_seen = 0;
  bool topic_oversize = false;
  std::string_view topic;
  uint16_t proxy_option = 0;
  unsigned if_match_count = 0;
  bool if_match_any = false;  // an empty If-Match: "any current representation", which exists
  bool if_none_match = false;

  uint16_t previous = 0;
  bool first = true;
  for (const OptionView& o : Options(message)) {
    // Option numbers never decrease on the wire, so a repeat is always adjacent.
    const bool repeated = !first && o.number == previous;
    first = false;
    previous = o.number;
    if (!Acceptable(FindOptionDefinition(o.number), o, repeated)) {
      // docs/protocol.md (the reference system's rule): a `t` over the 255-byte limit is a bad
      // topic (4.00), not a bad option.
      if (IsQuery(o.number) && !repeated && SplitQuery(o).key == "t") {
        ++topics_seen;
        topic_oversize = true;
        continue;
      }
      if (IsCritical(o.number)) return Fail(RequestError{RequestErrc::kBadOption, o.number});
      continue;
    }
    switch (o.number) {
      case option::kUriPath:
        if (path_segments++ == 0) first_segment = o.AsString();
        break;
      case option::kUriQuery:
      case option::kLocationQuery: {
        const QueryParam q = SplitQuery(o);
        if (q.key == "t") {
          ++topics_seen;
          topic = q.value;
        }
        break;
      }
      case option::kProxyUri:
      case option::kProxyScheme:
        proxy_option = o.number;
        break;
      case option::kIfMatch:
        ++if_match_count;
        if_match_any = if_match_any || o.value.empty();
        break;
      case option::kIfNoneMatch:
        if_none_match = true;
        break;
      default:
        break;  // recognized and without effect on a telemetry POST (Uri-Host, Accept, ...)
    }
  }
  if (proxy_option != 0) {
    return Fail(RequestError{RequestErrc::kProxyingNotSupported, proxy_option});
  }
  // coapgate's resources always exist and carry no ETag (RFC 7252 §5.10.8).
  if (if_none_match) {
    return Fail(RequestError{RequestErrc::kPreconditionFailed, option::kIfNoneMatch});
  }
  if (if_match_count > 0 && !if_match_any) {
    return Fail(RequestError{RequestErrc::kPreconditionFailed, option::kIfMatch});
  }

  request.route = RouteOf(path_segments, first_segment);
  if (topics_seen > 1 || topic_oversize) {
    request.topic_status = TopicStatus::kInvalid;
  } else if (topics_seen == 1 && !topic.empty()) {
    request.topic_status = IsValidTopic(topic) ? TopicStatus::kValid : TopicStatus::kInvalid;
    if (request.topic_status == TopicStatus::kValid) request.topic = topic;
  }
  return request;
}

}  // namespace coapgate::codec
