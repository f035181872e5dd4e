#include "sinks/mqtt_topic.h"

#include <cstring>

namespace coapgate::sinks {
namespace {

constexpr std::string_view kIccid = "{iccid}";
constexpr std::string_view kImsi = "{imsi}";
constexpr std::string_view kT = "{t}";

}  // namespace

std::optional<std::string> CheckTopicTemplate(std::string_view topic_template) {
  if (topic_template.empty()) return "must not be empty";
  if (topic_template.size() > kMaxTopicTemplateLength) {
    return "is " + std::to_string(topic_template.size()) + " bytes long; at most " +
           std::to_string(kMaxTopicTemplateLength) + " are allowed";
  }
  for (size_t i = 0; i < topic_template.size(); ++i) {
    const char c = topic_template[i];
    if (c == '\0') return "must not contain NUL characters";
    if (c == '+' || c == '#') {
      return std::string("must not contain the MQTT wildcard '") + c +
             "' (a published topic cannot have wildcards)";
    }
    if (c == '}') return "has a '}' outside a placeholder ({iccid}, {imsi} or {t})";
    if (c != '{') continue;
    const std::string_view rest = topic_template.substr(i);
    const size_t close = rest.find('}');
    if (close == std::string_view::npos) {
      return "has a '{' without its '}' (placeholders are {iccid}, {imsi} and {t})";
    }
    const std::string_view placeholder = rest.substr(0, close + 1);
    if (placeholder != kIccid && placeholder != kImsi && placeholder != kT) {
      // Shown only if printable: the reason goes into a one-line error message.
      const bool printable = placeholder.find_first_of(std::string_view("\n\r\t", 3)) ==
                             std::string_view::npos;
      return "has an unknown placeholder " +
             (printable ? std::string(placeholder) : std::string("{...}")) +
             " (placeholders are {iccid}, {imsi} and {t})";
    }
    i += placeholder.size() - 1;
  }
  return std::nullopt;
}

size_t RenderTopic(std::string_view topic_template, std::string_view iccid,
                   std::string_view imsi, std::string_view t, std::span<char> out) noexcept {
  size_t used = 0;
  const auto append = [&](std::string_view text) noexcept {
    if (out.size() - used < text.size()) return false;
    if (!text.empty()) std::memcpy(out.data() + used, text.data(), text.size());
    used += text.size();
    return true;
  };
  size_t i = 0;
  while (i < topic_template.size()) {
    const std::string_view rest = topic_template.substr(i);
    if (t.empty() && rest.starts_with("/{t}")) {
      i += 4;
      continue;
    }
    std::string_view piece = rest.substr(0, 1);
    std::string_view value = piece;
    if (rest.starts_with(kIccid)) {
      piece = kIccid;
      value = iccid;
    } else if (rest.starts_with(kImsi)) {
      piece = kImsi;
      value = imsi;
    } else if (rest.starts_with(kT)) {
      piece = kT;
      value = t;
    }
    if (!append(value)) return 0;
    i += piece.size();
  }
  return used;
}

}  // namespace coapgate::sinks
