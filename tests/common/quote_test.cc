#include "common/quote.h"

#include <gtest/gtest.h>

#include <string>

namespace coapgate {
namespace {

TEST(QuoteForMessage, EscapesWhatWouldBreakTheLineOrTheQuotes) {
  EXPECT_EQ(QuoteForMessage("plain"), "\"plain\"");
  EXPECT_EQ(QuoteForMessage("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(QuoteForMessage("l1\nl2\t\r\x01\x7f"), "\"l1\\nl2\\t\\r\\x01\\x7f\"");
  EXPECT_EQ(QuoteForMessage("\xc3\xbc"), "\"\xc3\xbc\"");  // UTF-8 stays as written
}

TEST(QuoteForMessage, CutsLongTextOnACharacterBoundary) {
  EXPECT_EQ(QuoteForMessage(std::string(kMaxQuotedBytes, 'x')),
            "\"" + std::string(kMaxQuotedBytes, 'x') + "\"");
  EXPECT_EQ(QuoteForMessage(std::string(kMaxQuotedBytes + 1, 'x')),
            "\"" + std::string(kMaxQuotedBytes, 'x') + "\"...");
  // "ü" straddling the cut is left out whole.
  const std::string text = std::string(kMaxQuotedBytes - 1, 'x') + "\xc3\xbc" + "y";
  EXPECT_EQ(QuoteForMessage(text), "\"" + std::string(kMaxQuotedBytes - 1, 'x') + "\"...");
}

TEST(OneLineForMessage, EscapesWithoutQuoting) {
  EXPECT_EQ(OneLineForMessage("odd\nname \"x\".toml"), "odd\\nname \"x\".toml");
}

}  // namespace
}  // namespace coapgate
