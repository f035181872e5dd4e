#include "engine/dissect.h"

#include <gtest/gtest.h>

namespace coapgate::engine {
namespace {

TEST(ParseHex, AcceptsSeparatorsAndPrefix) {
  auto b = ParseHex("0x40:02 12-34");
  EXPECT_FALSE(b);  // '-' is not a separator
  auto ok = ParseHex("0x40:02 12 34");
  ASSERT_TRUE(ok);
  EXPECT_EQ(HexString(*ok), "40 02 12 34");
  auto joined = ParseHex("40021234");
  ASSERT_TRUE(joined);
  EXPECT_EQ(joined->size(), 4u);
}

TEST(ParseHex, RejectsOddDigits) {
  EXPECT_FALSE(ParseHex("4"));
  EXPECT_FALSE(ParseHex("4 02"));
  auto e = ParseHex("zz");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().find("position 0"), std::string::npos);
}

TEST(ParseBase64, Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""}, {"Zg==", "66"}, {"Zm8=", "66 6f"}, {"Zm9v", "66 6f 6f"},
      {"Zm9vYg==", "66 6f 6f 62"}, {"Zm9vYmE=", "66 6f 6f 62 61"},
      {"Zm9vYmFy", "66 6f 6f 62 61 72"}, {"ABoANwA=", "00 1a 00 37 00"}, {"ABoANwA", "00 1a 00 37 00"}};
  for (const auto& [b64, hex] : vectors) {
    auto bytes = ParseBase64(b64);
    ASSERT_TRUE(bytes) << b64;
    EXPECT_EQ(HexString(*bytes), hex) << b64;
  }
  EXPECT_FALSE(ParseBase64("Zm9v!"));
  EXPECT_FALSE(ParseBase64("Z"));
  EXPECT_FALSE(ParseBase64("Zg==Zg=="));
}

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
}  // namespace coapgate::engine
