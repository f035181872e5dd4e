// EncodeMessage: exact bytes for what coapgate sends, the bounds contract, and round trips
// through ParseMessage.
#include "codec/encoder.h"

#include <gtest/gtest.h>

#include <array>
#include <optional>

#include "codec/code.h"
#include "codec/option_iterator.h"
#include "codec/option_number.h"
#include "tests/support/bytes.h"

namespace coapgate::codec {
namespace {

using test::Bytes;

std::vector<std::byte> Encode(const OutgoingMessage& m) {
  std::array<std::byte, 1500> buffer{};
  auto n = EncodeMessage(m, buffer);
  EXPECT_TRUE(n) << (n ? "" : ToString(n.error()));
  return n ? std::vector<std::byte>(buffer.begin(), buffer.begin() + *n) : std::vector<std::byte>{};
}

// Why EncodeMessage refuses `m` (into a buffer large enough for any reply); nullopt, and a
// failure, when it encodes it.
std::optional<EncodeErrc> RefusalOf(const OutgoingMessage& m) {
  std::array<std::byte, 64> out{};
  auto n = EncodeMessage(m, out);
  EXPECT_FALSE(n) << "encoded into " << *n << " bytes";
  return n ? std::nullopt : std::optional(n.error());
}

TEST(EncodeMessage, PiggybackedChanged) {
  const auto request_bytes = Bytes("44 02 30 39 de ad be ef b1 61");
  auto request = ParseMessage(request_bytes);
  ASSERT_TRUE(request);
  EXPECT_EQ(Encode(ResponseTo(*request, code::kChanged, 0)), Bytes("64 44 30 39 de ad be ef"));
}

TEST(EncodeMessage, NonResponseUsesItsOwnMessageId) {
  const auto request_bytes = Bytes("52 02 30 39 01 02");
  auto request = ParseMessage(request_bytes);
  ASSERT_TRUE(request);
  const OutgoingMessage response = ResponseTo(*request, code::kChanged, 0xbeef);
  EXPECT_EQ(response.type, MessageType::kNonConfirmable);
  EXPECT_EQ(Encode(response), Bytes("52 44 be ef 01 02"));
}

TEST(EncodeMessage, Reset) {
  std::array<std::byte, 4> out{};
  auto n = EncodeReset(0x1234, out);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, kResetSize);
  EXPECT_EQ(std::vector<std::byte>(out.begin(), out.end()), Bytes("70 00 12 34"));
}

TEST(EncodeMessage, ServiceUnavailableWithMaxAge) {
  OutgoingMessage m;
  m.code = code::kServiceUnavailable;
  m.message_id = 7;
  m.max_age = 30;
  // Max-Age (14): delta 14 → nibble 13 + 1, length 1.
  EXPECT_EQ(Encode(m), Bytes("60 a3 00 07 d1 01 1e"));
}

TEST(EncodeMessage, TooLargeWithSize1AndDiagnostic) {
  OutgoingMessage m;
  m.code = code::kRequestEntityTooLarge;
  m.message_id = 1;
  m.size1 = 1024;
  const auto text = test::Text("Too Large");
  m.payload = text;
  // Size1 (60): delta 60 → 13 + 47, length 2 (0x0400).
  EXPECT_EQ(Encode(m), test::Concat(Bytes("60 8d 00 01 d2 2f 04 00 ff"), text));
}

TEST(EncodeMessage, OptionsInNumberOrderWithMinimalUints) {
  OutgoingMessage m;
  m.code = code::kContent;
  m.content_format = 0;  // zero is encoded with an empty value
  m.max_age = 0x010000;
  m.size1 = 300;
  EXPECT_EQ(Encode(m), Bytes("60 45 00 00 c0 23 01 00 00 d2 21 01 2c"));
}

TEST(EncodeMessage, RejectsLongToken) {
  const auto token = Bytes("01 02 03 04 05 06 07 08 09");
  OutgoingMessage m;
  m.code = code::kChanged;
  m.token = token;
  EXPECT_EQ(RefusalOf(m), EncodeErrc::kTokenTooLong);
}

TEST(EncodeMessage, RejectsEmptyWithContent) {
  const auto token = Bytes("01");
  OutgoingMessage m;
  m.type = MessageType::kReset;
  m.code = code::kEmpty;
  m.token = token;
  EXPECT_EQ(RefusalOf(m), EncodeErrc::kBadEmpty);
}

TEST(EncodeMessage, RejectsReservedCode) {
  OutgoingMessage m;
  m.code = MakeCode(7, 1);
  EXPECT_EQ(RefusalOf(m), EncodeErrc::kBadCode);
}

TEST(EncodeMessage, NeverWritesPastTheBuffer) {
  const auto token = Bytes("01 02 03 04 05 06 07 08");
  const auto payload = test::Text("Request Entity Too Large");
  OutgoingMessage m;
  m.code = code::kRequestEntityTooLarge;
  m.token = token;
  m.content_format = 0;
  m.max_age = 60;
  m.size1 = 1024;
  m.payload = payload;
  const size_t full = Encode(m).size();
  ASSERT_GT(full, 0u);
  for (size_t limit = 0; limit <= full; ++limit) {
    std::vector<std::byte> buffer(full + 16, std::byte{0xa5});
    auto n = EncodeMessage(m, std::span(buffer).first(limit));
    if (limit < full) {
      ASSERT_FALSE(n) << limit;
      EXPECT_EQ(n.error(), EncodeErrc::kBufferTooSmall);
    } else {
      ASSERT_TRUE(n);
      EXPECT_EQ(*n, full);
    }
    for (size_t i = limit; i < buffer.size(); ++i) {
      ASSERT_EQ(buffer[i], std::byte{0xa5}) << "wrote byte " << i << " with a " << limit
                                            << "-byte buffer";
    }
  }
}

TEST(EncodeMessage, RoundTripsThroughParse) {
  const auto token = Bytes("aa bb cc dd");
  const auto payload = test::Text("8988280666000002864,kQ3v9TzA1bXc7LmN0pR,coaps://x:5684");
  for (uint32_t max_age : {0u, 1u, 255u, 256u, 65535u, 65536u, 0xffffffffu}) {
    OutgoingMessage m;
    m.type = MessageType::kNonConfirmable;
    m.code = code::kContent;
    m.message_id = 0xfffe;
    m.token = token;
    m.content_format = 0;
    m.max_age = max_age;
    m.size1 = 1024;
    m.payload = payload;
    const auto bytes = Encode(m);
    auto parsed = ParseMessage(bytes);
    ASSERT_TRUE(parsed) << max_age;
    EXPECT_EQ(parsed->type, m.type);
    EXPECT_EQ(parsed->code, m.code);
    EXPECT_EQ(parsed->message_id, m.message_id);
    EXPECT_TRUE(std::ranges::equal(parsed->token, token));
    EXPECT_TRUE(std::ranges::equal(parsed->payload, payload));
    std::vector<std::pair<uint16_t, uint32_t>> options;
    for (const OptionView& o : Options(*parsed)) options.emplace_back(o.number, *o.AsUint());
    const std::vector<std::pair<uint16_t, uint32_t>> expected = {
        {option::kContentFormat, 0}, {option::kMaxAge, max_age}, {option::kSize1, 1024}};
    EXPECT_EQ(options, expected);
  }
}

TEST(EncodeMessage, RoundTripsEveryTokenLength) {
  const auto all = Bytes("01 02 03 04 05 06 07 08");
  for (size_t n = 0; n <= kMaxTokenLength; ++n) {
    const auto request_bytes = test::Concat(
        {static_cast<std::byte>(0x40 | n), std::byte{0x02}, std::byte{0}, std::byte{9}},
        std::vector<std::byte>(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n)));
    auto request = ParseMessage(request_bytes);
    ASSERT_TRUE(request);
    const auto bytes = Encode(ResponseTo(*request, code::kChanged, 0));
    auto response = ParseMessage(bytes);
    ASSERT_TRUE(response);
    EXPECT_EQ(response->type, MessageType::kAcknowledgement);
    EXPECT_EQ(response->message_id, 9);
    EXPECT_TRUE(std::ranges::equal(response->token, request->token));
  }
}

}  // namespace
}  // namespace coapgate::codec
