#include "app/dissect.h"

#include <gtest/gtest.h>

#include "common/hex.h"

namespace coapgate::app {
namespace {

TEST(Dissect, DescribesARequest) {
  auto d = ParseHex("44 02 30 39 de ad be ef b0 43 74 3d 61 ff 68 69");
  ASSERT_TRUE(d);
  const std::string text = Dissect(*d, {});
  EXPECT_NE(text.find("CON 0.02 POST mid=12345 token=de ad be ef"), std::string::npos) << text;
  EXPECT_NE(text.find("option    11 Uri-Path critical \"\""), std::string::npos) << text;
  EXPECT_NE(text.find("option    15 Uri-Query critical \"t=a\""), std::string::npos) << text;
  EXPECT_NE(text.find("payload   2 bytes \"hi\""), std::string::npos) << text;
  EXPECT_NE(text.find("route=/ topic=a"), std::string::npos) << text;
  EXPECT_NE(text.find("verdict   request (none)"), std::string::npos) << text;
  EXPECT_EQ(text.find("reply"), std::string::npos) << text;
}

TEST(Dissect, ShowsTheReplyBytes) {
  auto d = ParseHex("40 00 12 34");
  ASSERT_TRUE(d);
  const std::string text = Dissect(*d, {});
  EXPECT_NE(text.find("verdict   reset (ping)"), std::string::npos) << text;
  EXPECT_NE(text.find("reply     70 00 12 34"), std::string::npos) << text;
}

TEST(Dissect, ShowsParseErrors) {
  auto d = ParseHex("40 02 12 34 ff");
  ASSERT_TRUE(d);
  const std::string text = Dissect(*d, {});
  EXPECT_NE(text.find("error     empty_payload"), std::string::npos) << text;
  EXPECT_NE(text.find("verdict   reset (format_error)"), std::string::npos) << text;
}

}  // namespace
}  // namespace coapgate::app
