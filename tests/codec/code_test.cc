#include "codec/code.h"

#include <gtest/gtest.h>

namespace coapgate::codec {
namespace {

TEST(Code, ClassAndDetail) {
  EXPECT_EQ(code::kChanged, 0x44);
  EXPECT_EQ(code::kServiceUnavailable, 0xa3);
  EXPECT_EQ(CodeClass(code::kRequestEntityTooLarge), 4u);
  EXPECT_EQ(CodeDetail(code::kRequestEntityTooLarge), 13u);
}

TEST(Code, Kinds) {
  EXPECT_TRUE(IsRequestCode(code::kPost));
  EXPECT_FALSE(IsRequestCode(code::kEmpty));
  EXPECT_TRUE(IsResponseCode(code::kContent));
  EXPECT_FALSE(IsResponseCode(code::kGet));
  for (unsigned cls : {1u, 3u, 6u, 7u}) EXPECT_TRUE(IsReservedClass(MakeCode(cls, 0))) << cls;
  for (unsigned cls : {0u, 2u, 4u, 5u}) EXPECT_FALSE(IsReservedClass(MakeCode(cls, 1))) << cls;
}

TEST(Code, Names) {
  EXPECT_EQ(CodeName(code::kNotFound), "Not Found");
  EXPECT_EQ(CodeName(code::kBadOption), "Bad Option");
  EXPECT_EQ(CodeName(MakeCode(4, 31)), "");
}

}  // namespace
}  // namespace coapgate::codec
