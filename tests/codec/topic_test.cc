// docs/protocol.md topic rules.
#include "codec/topic.h"

#include <gtest/gtest.h>

#include <string>

namespace coapgate::codec {
namespace {

TEST(IsValidTopic, AcceptsTheAllowedAlphabet) {
  EXPECT_TRUE(IsValidTopic("test"));
  EXPECT_TRUE(IsValidTopic("a/b"));
  EXPECT_TRUE(IsValidTopic("Sensor_01/temp/ABC_xyz9"));
  EXPECT_TRUE(IsValidTopic("/leading"));
  EXPECT_TRUE(IsValidTopic("trailing/"));
  EXPECT_TRUE(IsValidTopic("/"));
}

TEST(IsValidTopic, RejectsDoubleSlash) {
  EXPECT_FALSE(IsValidTopic("a//b"));
  EXPECT_FALSE(IsValidTopic("//"));
  EXPECT_FALSE(IsValidTopic("a/b//"));
}

TEST(IsValidTopic, RejectsOtherCharacters) {
  for (const char* t : {"a+b", "#", "a b", "a-b", "a.b", "a=b", "ä", "a\x80", "t\n"}) {
    EXPECT_FALSE(IsValidTopic(t)) << t;
  }
  EXPECT_FALSE(IsValidTopic(std::string("a\0b", 3)));
}

TEST(IsValidTopic, LengthLimitIs253) {
  EXPECT_TRUE(IsValidTopic(std::string(253, 'x')));
  EXPECT_FALSE(IsValidTopic(std::string(254, 'x')));
  EXPECT_FALSE(IsValidTopic(""));  // empty is "no topic", decided by the caller
}

}  // namespace
}  // namespace coapgate::codec
