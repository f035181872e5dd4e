#include "common/rfc3339.h"

#include <gtest/gtest.h>

#include <array>
#include <string_view>

namespace coapgate {
namespace {

std::string_view Format(uint64_t ms, bool milliseconds, std::array<char, kRfc3339Size>& out) {
  return {out.data(), FormatRfc3339(ms, milliseconds, out)};
}

TEST(Rfc3339, FormatsUtcWithAndWithoutMilliseconds) {
  std::array<char, kRfc3339Size> out;
  EXPECT_EQ(Format(0, true, out), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(Format(1796121801567, true, out), "2026-12-01T10:43:21.567Z");
  EXPECT_EQ(Format(1796121801567, false, out), "2026-12-01T10:43:21Z");
  EXPECT_EQ(Format(951825600007, true, out), "2000-02-29T12:00:00.007Z");  // leap day
}

}  // namespace
}  // namespace coapgate
