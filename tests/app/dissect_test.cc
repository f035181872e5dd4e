#include "app/dissect.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <string_view>

#include "common/hex.h"

namespace coapgate::app {
namespace {

// What Dissect says about the datagram written as `hex` (which must be valid hex).
std::string DissectHex(std::string_view hex) {
  auto d = ParseHex(hex);
  EXPECT_TRUE(d) << hex;
  return d ? Dissect(*d, {}) : std::string();
}

// `text` contains each of `parts`; a failure names the part and shows the whole text.
void ExpectContains(const std::string& text, std::initializer_list<std::string_view> parts) {
  for (std::string_view part : parts) {
    EXPECT_NE(text.find(part), std::string::npos) << "want \"" << part << "\" in:\n" << text;
  }
}

TEST(Dissect, DescribesARequest) {
  const std::string text = DissectHex("44 02 30 39 de ad be ef b0 43 74 3d 61 ff 68 69");
  ExpectContains(text, {"CON 0.02 POST mid=12345 token=de ad be ef",
                        "option    11 Uri-Path critical \"\"",
                        "option    15 Uri-Query critical \"t=a\"", "payload   2 bytes \"hi\"",
                        "route=/ topic=a", "verdict   request (none)"});
  EXPECT_EQ(text.find("reply"), std::string::npos) << text;
}

TEST(Dissect, ShowsTheReplyBytes) {
  ExpectContains(DissectHex("40 00 12 34"), {"verdict   reset (ping)", "reply     70 00 12 34"});
}

TEST(Dissect, ShowsParseErrors) {
  ExpectContains(DissectHex("40 02 12 34 ff"),
                 {"error     empty_payload", "verdict   reset (format_error)"});
}

}  // namespace
}  // namespace coapgate::app
