// MQTT topic templates (docs/downstream.md): which templates the config accepts, and how a template
// renders with and without the device's `t`, within a caller's buffer.
#include "sinks/mqtt_topic.h"

#include <gtest/gtest.h>

#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace coapgate::sinks {
namespace {

constexpr std::string_view kIccid = "8988280666000002864";
constexpr std::string_view kImsi = "901405100002864";

std::string Render(std::string_view topic_template, std::string_view t,
                   std::string_view imsi = kImsi) {
  std::array<char, 2048> out;
  const size_t n = RenderTopic(topic_template, kIccid, imsi, t, out);
  return std::string(out.data(), n);
}

TEST(CheckTopicTemplate, AcceptsPlaceholdersAndLiterals) {
  for (const std::string_view accepted :
       {"{iccid}/{t}", "{iccid}", "error", "devices/{iccid}/{imsi}/{t}", "{t}", "a/{t}/b",
        "{iccid}{imsi}", "plain/literal/topic", "/leading/slash", "x/{t}/{t}",
        "unicode/\xc3\xa9t\xc3\xa9/{iccid}"}) {
    EXPECT_EQ(CheckTopicTemplate(accepted), std::nullopt) << accepted;
  }
  EXPECT_EQ(CheckTopicTemplate(std::string(kMaxTopicTemplateLength, 'a')), std::nullopt);
}

TEST(CheckTopicTemplate, RejectsWithAReason) {
  const std::string nul("a\0b", 3);
  const std::string too_long(kMaxTopicTemplateLength + 1, 'a');
  struct Case {
    std::string_view topic_template;
    std::string_view reason_mentions;
  };
  for (const Case& c : std::vector<Case>{{"", "empty"},
                                         {"{iccid}/+", "'+'"},
                                         {"#", "'#'"},
                                         {"a/#/{t}", "'#'"},
                                         {nul, "NUL"},
                                         {too_long, "1024"},
                                         {"{ICCID}", "{ICCID}"},
                                         {"{foo}/{t}", "{foo}"},
                                         {"{}", "{}"},
                                         {"{iccid", "'{'"},
                                         {"iccid}", "'}'"},
                                         {"{t}}", "'}'"},
                                         {"{{t}}", "{{t}"},
                                         {"{ t}", "{ t}"}}) {
    const std::optional<std::string> reason = CheckTopicTemplate(c.topic_template);
    ASSERT_TRUE(reason.has_value()) << c.topic_template;
    EXPECT_NE(reason->find(c.reason_mentions), std::string::npos)
        << c.topic_template << " -> " << *reason;
    EXPECT_EQ(reason->find('\n'), std::string::npos) << "one line: " << *reason;
  }
}

TEST(RenderTopic, DefaultTemplateWithTopic) {
  EXPECT_EQ(Render("{iccid}/{t}", "sensors/temp"), "8988280666000002864/sensors/temp");
}

TEST(RenderTopic, WithoutTopicTheSlashBeforeItVanishes) {
  EXPECT_EQ(Render("{iccid}/{t}", ""), "8988280666000002864");
  EXPECT_EQ(Render("a/{t}/b", ""), "a/b");
  EXPECT_EQ(Render("{iccid}{t}", ""), "8988280666000002864");
  EXPECT_EQ(Render("x/{t}/{t}", ""), "x");
  EXPECT_EQ(Render("x/{t}/{t}", "y"), "x/y/y");
}

TEST(RenderTopic, PrefixTemplatesAndImsi) {
  EXPECT_EQ(Render("coap/{iccid}/{t}", "t1"), "coap/8988280666000002864/t1");
  EXPECT_EQ(Render("coap/{iccid}/{t}", ""), "coap/8988280666000002864");
  EXPECT_EQ(Render("by-imsi/{imsi}/{t}", "a_b"), "by-imsi/901405100002864/a_b");
  EXPECT_EQ(Render("by-imsi/{imsi}/{iccid}", "", ""), "by-imsi//8988280666000002864");
  EXPECT_EQ(Render("error", "ignored"), "error");
}

TEST(RenderTopic, EmptyResultIsZero) {
  std::array<char, 16> out;
  EXPECT_EQ(RenderTopic("{t}", kIccid, kImsi, "", out), 0u);
}

TEST(RenderTopic, TooSmallBufferIsZeroAndStaysInside) {
  const std::string expected = "coap/8988280666000002864/sensors";
  for (size_t size = 0; size <= expected.size() + 1; ++size) {
    std::vector<char> buffer(size + 8, '#');
    const size_t n = RenderTopic("coap/{iccid}/{t}", kIccid, kImsi, "sensors",
                                 std::span<char>(buffer.data(), size));
    if (size < expected.size()) {
      EXPECT_EQ(n, 0u) << size;
    } else {
      ASSERT_EQ(n, expected.size()) << size;
      EXPECT_EQ(std::string(buffer.data(), n), expected);
    }
    for (size_t i = size; i < buffer.size(); ++i) ASSERT_EQ(buffer[i], '#') << size;
  }
}

}  // namespace
}  // namespace coapgate::sinks
