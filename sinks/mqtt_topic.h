// MQTT topic templates (docs/downstream.md): "{iccid}/{t}" by default, or any literal prefix or layout
// around the placeholders {iccid}, {imsi} and {t}. The config parser checks a template once;
// the MQTT sink renders it once per message.
//
// Thread contract: pure functions; any thread. RenderTopic never allocates and never throws:
// it runs once per message on the publisher threads.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace coapgate::sinks {

// Longest template accepted: far beyond any sensible layout, and it keeps the rendered topic
// well inside MQTT's 65535-byte limit.
inline constexpr size_t kMaxTopicTemplateLength = 1024;

// nullopt if `topic_template` is usable, else a one-line reason (without the setting's name).
// Rules: non-empty; at most kMaxTopicTemplateLength bytes; the only placeholders are {iccid},
// {imsi} and {t}; no other '{' or '}'; no MQTT wildcards '+' '#' (a PUBLISH topic must not
// contain them); no NUL.
[[nodiscard]] std::optional<std::string> CheckTopicTemplate(std::string_view topic_template);

// Renders `topic_template` into `out` and returns the number of chars written (no NUL
// terminator), or 0 if `out` is too small or the result would be empty. When `t` is empty,
// "{t}" and a literal '/' directly before it vanish: "{iccid}/{t}" renders as the ICCID
// alone, "a/{t}/b" as "a/b". An empty `imsi` renders as nothing.
// REQUIRES: CheckTopicTemplate(topic_template) is nullopt (else the output is unspecified,
// but stays within `out`).
[[nodiscard]] size_t RenderTopic(std::string_view topic_template, std::string_view iccid,
                                 std::string_view imsi, std::string_view t,
                                 std::span<char> out) noexcept;

}  // namespace coapgate::sinks
