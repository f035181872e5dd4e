#include "common/hex.h"

#include <gtest/gtest.h>

#include <array>

namespace coapgate {
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


TEST(DecodeHex, StrictEvenDigitsOnlyAndBounded) {
  std::array<std::byte, 4> out{};
  auto n = DecodeHex("0aFf", out);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(out[0], std::byte{0x0a});
  EXPECT_EQ(out[1], std::byte{0xff});
  EXPECT_EQ(DecodeHex("", out).error(), HexErrc::kBadHex);
  EXPECT_EQ(DecodeHex("abc", out).error(), HexErrc::kBadHex);
  EXPECT_EQ(DecodeHex("0x00", out).error(), HexErrc::kBadHex);
  EXPECT_EQ(DecodeHex("00 11", out).error(), HexErrc::kBadHex);
  EXPECT_EQ(DecodeHex("0011223344", out).error(), HexErrc::kTooLong);
  EXPECT_TRUE(IsStrictHex("00aa"));
  EXPECT_FALSE(IsStrictHex("0g"));
}

}  // namespace
}  // namespace coapgate
