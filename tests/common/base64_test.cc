#include "common/base64.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/hex.h"

namespace coapgate {
namespace {

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


TEST(Base64Encode, RoundTripsThroughParseBase64) {
  for (size_t n = 0; n < 40; ++n) {
    std::vector<std::byte> in(n);
    for (size_t i = 0; i < n; ++i) in[i] = static_cast<std::byte>(i * 37 + 11);
    std::string text(Base64Length(n), '?');
    ASSERT_EQ(Base64Encode(in, text.data()), text.size());
    auto back = ParseBase64(text);
    ASSERT_TRUE(back) << text;
    EXPECT_EQ(*back, in) << text;
  }
}

}  // namespace
}  // namespace coapgate
