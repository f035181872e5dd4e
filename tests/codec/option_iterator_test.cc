// RFC 7252 §3.1 option encoding as OptionIterator reads it: deltas accumulate, the 13/14
// extended forms, and the §3.2 uint/string value formats.
#include "codec/option_iterator.h"

#include <gtest/gtest.h>

#include <span>
#include <vector>

#include "codec/option_number.h"
#include "tests/support/bytes.h"

namespace coapgate::codec {
namespace {

using test::Bytes;

std::vector<OptionView> All(const MessageView& m) {
  std::vector<OptionView> out;
  for (const OptionView& o : Options(m)) out.push_back(o);
  return out;
}

// The options of `datagram`, which must be a well-formed message (else the test fails and gets
// none); the views point into `datagram`.
std::vector<OptionView> OptionsOf(std::span<const std::byte> datagram) {
  auto m = ParseMessage(datagram);
  EXPECT_TRUE(m);
  return m ? All(*m) : std::vector<OptionView>{};
}

TEST(OptionIterator, AccumulatesDeltas) {
  // Uri-Path "" (11), Uri-Path "a" (11), Uri-Query "t=x" (15), Size1 0x0400 (60).
  const auto d = Bytes("40 02 00 01 b0 01 61 43 74 3d 78 d2 20 04 00");
  const auto options = OptionsOf(d);
  ASSERT_EQ(options.size(), 4u);
  EXPECT_EQ(options[0].number, option::kUriPath);
  EXPECT_TRUE(options[0].value.empty());
  EXPECT_EQ(options[1].number, option::kUriPath);
  EXPECT_EQ(options[1].AsString(), "a");
  EXPECT_EQ(options[2].number, option::kUriQuery);
  EXPECT_EQ(options[2].AsString(), "t=x");
  EXPECT_EQ(options[3].number, option::kSize1);
  EXPECT_EQ(options[3].AsUint(), 1024u);
}

TEST(OptionIterator, ReadsOneByteExtendedDeltaAndLength) {
  // Delta 13+47 = 60, length 13+3 = 16.
  const auto d = Bytes("40 02 00 01 dd 2f 03 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66");
  const auto options = OptionsOf(d);
  ASSERT_EQ(options.size(), 1u);
  EXPECT_EQ(options[0].number, 60);
  EXPECT_EQ(options[0].AsString(), "0123456789abcdef");
}

TEST(OptionIterator, ReadsTwoByteExtendedDeltaAndLength) {
  // Delta 269 + 0x0100 = 525; length 269 + 1 = 270.
  std::vector<std::byte> d = Bytes("40 02 00 01 ee 01 00 00 01");
  d.resize(d.size() + 270, std::byte{'q'});
  auto m = ParseMessage(d);
  ASSERT_TRUE(m);
  const auto options = All(*m);
  ASSERT_EQ(options.size(), 1u);
  EXPECT_EQ(options[0].number, 525);
  EXPECT_EQ(options[0].value.size(), 270u);
  EXPECT_TRUE(m->payload.empty());
}

TEST(OptionIterator, StopsAtPayloadMarker) {
  const auto d = Bytes("40 02 00 01 b1 61 ff 62 63");
  auto m = ParseMessage(d);
  ASSERT_TRUE(m);
  const auto options = All(*m);
  ASSERT_EQ(options.size(), 1u);
  EXPECT_EQ(test::AsText(m->payload), "bc");
}

TEST(OptionIterator, NoOptions) {
  const auto d = Bytes("40 02 00 01 ff 62");
  auto m = ParseMessage(d);
  ASSERT_TRUE(m);
  EXPECT_TRUE(All(*m).empty());
  EXPECT_TRUE(Options(*m).begin() == Options(*m).end());
}

TEST(OptionView, AsUintAcceptsZeroToFourBytes) {
  const std::vector<std::byte> v = Bytes("01 02 03 04 05");
  EXPECT_EQ((OptionView{14, std::span(v).first(0)}.AsUint()), 0u);
  EXPECT_EQ((OptionView{14, std::span(v).first(1)}.AsUint()), 0x01u);
  EXPECT_EQ((OptionView{14, std::span(v).first(3)}.AsUint()), 0x010203u);
  EXPECT_EQ((OptionView{14, std::span(v).first(4)}.AsUint()), 0x01020304u);
  EXPECT_EQ((OptionView{14, std::span(v).first(5)}.AsUint()), std::nullopt);
  // Leading zeros are legal, if not minimal (RFC 7252 §3.2).
  const std::vector<std::byte> padded = Bytes("00 00 3c");
  EXPECT_EQ((OptionView{14, padded}.AsUint()), 60u);
}

TEST(OptionNumber, CriticalIsOdd) {
  EXPECT_TRUE(IsCritical(option::kUriPath));
  EXPECT_TRUE(IsCritical(option::kUriQuery));
  EXPECT_FALSE(IsCritical(option::kContentFormat));
  EXPECT_FALSE(IsCritical(option::kLocationQuery));
}

TEST(OptionNumber, TableFollowsRfc7252Section5_10) {
  const OptionDefinition* q = FindOptionDefinition(option::kUriQuery);
  ASSERT_NE(q, nullptr);
  EXPECT_TRUE(q->repeatable);
  EXPECT_EQ(q->min_length, 0);
  EXPECT_EQ(q->max_length, 255);
  const OptionDefinition* host = FindOptionDefinition(option::kUriHost);
  ASSERT_NE(host, nullptr);
  EXPECT_FALSE(host->repeatable);
  EXPECT_EQ(host->min_length, 1);
  const OptionDefinition* cf = FindOptionDefinition(option::kContentFormat);
  ASSERT_NE(cf, nullptr);
  EXPECT_EQ(cf->max_length, 2);
  const OptionDefinition* max_age = FindOptionDefinition(option::kMaxAge);
  ASSERT_NE(max_age, nullptr);
  EXPECT_EQ(max_age->max_length, 4);
  EXPECT_EQ(FindOptionDefinition(option::kOscore), nullptr);
  EXPECT_EQ(FindOptionDefinition(option::kBlock1), nullptr);
  EXPECT_EQ(FindOptionDefinition(2), nullptr);
  EXPECT_EQ(FindOptionDefinition(65535), nullptr);
}

}  // namespace
}  // namespace coapgate::codec
