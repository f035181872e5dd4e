// RFC 7252 §3 message format, one test per rule, with the reliability catalogue's cases
// (P01–P17) and libcoap's tests/test_pdu.c regression vectors (t_parse_pdu*) as byte arrays.
#include "codec/message.h"

#include <gtest/gtest.h>

#include <initializer_list>

#include "tests/support/bytes.h"

namespace coapgate::codec {
namespace {

using test::Bytes;

ParseErrc ErrorOf(std::span<const std::byte> datagram) {
  auto m = ParseMessage(datagram);
  EXPECT_FALSE(m.has_value());
  return m ? ParseErrc::kTooShort : m.error().errc;
}

// Each datagram (hex) is rejected with `errc`; a failure names the datagram.
void ExpectRejected(ParseErrc errc, std::initializer_list<const char*> datagrams) {
  for (const char* hex : datagrams) EXPECT_EQ(ErrorOf(Bytes(hex)), errc) << hex;
}

TEST(ParseMessage, MinimalConPost) {  // P01
  const auto d = Bytes("40 02 12 34");
  auto m = ParseMessage(d);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->type, MessageType::kConfirmable);
  EXPECT_EQ(m->code, 0x02);
  EXPECT_EQ(m->message_id, 0x1234);
  EXPECT_TRUE(m->token.empty());
  EXPECT_TRUE(m->options.empty());
  EXPECT_TRUE(m->payload.empty());
}

TEST(ParseMessage, ViewsPointIntoTheDatagram) {
  const auto d = Bytes("54 02 ab cd 01 02 03 04 b1 61 ff 68 69");
  auto m = ParseMessage(d);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->type, MessageType::kNonConfirmable);
  EXPECT_EQ(m->token.data(), d.data() + 4);
  EXPECT_EQ(m->token.size(), 4u);
  EXPECT_EQ(m->options.data(), d.data() + 8);
  EXPECT_EQ(m->options.size(), 2u);
  EXPECT_EQ(m->payload.data(), d.data() + 11);
  EXPECT_EQ(test::AsText(m->payload), "hi");
}

TEST(ParseMessage, RejectsFewerThanFourBytes) {  // P03
  for (const char* hex : {"", "40", "40 02", "40 02 12"}) {
    const auto d = Bytes(hex);
    auto m = ParseMessage(d);
    ASSERT_FALSE(m) << hex;
    EXPECT_EQ(m.error().errc, ParseErrc::kTooShort);
    EXPECT_EQ(DispositionOf(m.error()), Disposition::kDrop);
  }
}

TEST(ParseMessage, IgnoresOtherVersions) {  // P02
  for (const char* hex : {"00 02 12 34", "80 02 12 34", "c0 02 12 34"}) {
    const auto d = Bytes(hex);
    auto m = ParseMessage(d);
    ASSERT_FALSE(m) << hex;
    EXPECT_EQ(m.error().errc, ParseErrc::kBadVersion);
    EXPECT_EQ(DispositionOf(m.error()), Disposition::kDrop) << "Ver != 1 is silently ignored";
  }
}

TEST(ParseMessage, RejectsTokenLength9To15) {  // P04, P05; libcoap t_parse_pdu4
  auto d = Bytes("59 69 12 34 74 6f 6b 65 6e 31 32 33 34");
  EXPECT_EQ(ErrorOf(d), ParseErrc::kReservedTokenLength);
  d[0] = std::byte{0x5f};
  EXPECT_EQ(ErrorOf(d), ParseErrc::kReservedTokenLength);
  for (const char* hex : {"49 02 12 34 01 02 03 04 05 06 07 08 09", "4d 02 12 34 00",
                          "4e 02 12 34 00 00", "4f 02 12 34"}) {
    const auto con = Bytes(hex);
    auto m = ParseMessage(con);
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().errc, ParseErrc::kReservedTokenLength) << hex;
    EXPECT_EQ(m.error().message_id, 0x1234);
    EXPECT_EQ(DispositionOf(m.error()), Disposition::kReset) << "a CON format error gets RST";
  }
}

TEST(ParseMessage, RejectsTruncatedToken) {  // P06, P13 (libcoap issue #214: t_parse_pdu16)
  ExpectRejected(ParseErrc::kTruncatedToken, {"48 02 12 34 01 02 03"});
  ExpectRejected(ParseErrc::kReservedTokenLength, {"5a 0a 5b 5b"});
  ExpectRejected(ParseErrc::kTruncatedToken, {"58 02 12 34"});
}

TEST(ParseMessage, RejectsMarkerWithoutPayload) {  // P07; libcoap t_parse_pdu9, t_parse_pdu10
  ExpectRejected(ParseErrc::kEmptyPayload,
                 {"40 02 12 34 ff", "70 00 12 34 ff", "53 73 12 34 74 6f 6b 31 61 c1 00 ff"});
}

TEST(ParseMessage, RejectsDeltaNibble15OutsideMarker) {  // P08
  ExpectRejected(ParseErrc::kReservedNibble, {"40 02 12 34 f0", "40 02 12 34 f1 00"});
}

TEST(ParseMessage, RejectsLengthNibble15) {  // P09
  ExpectRejected(ParseErrc::kReservedNibble, {"40 02 12 34 bf 00 00", "40 02 12 34 0f"});
}

TEST(ParseMessage, RejectsTruncatedExtendedLength) {  // P10 (libcoap issue #199 class)
  ExpectRejected(ParseErrc::kTruncatedOption,
                 {"40 02 12 34 be 01", "40 02 12 34 bd", "40 02 12 34 e0 01", "40 02 12 34 d0"});
}

TEST(ParseMessage, RejectsOptionValuePastTheEnd) {  // P11; libcoap t_parse_pdu3, t_parse_pdu6
  ExpectRejected(ParseErrc::kTruncatedOption,
                 {"40 02 12 34 b5 61 62", "53 69 12 34 74 6f 6b 65 6e",
                  "55 73 12 34 74 6f 6b 65 6e 00 c1 00 ae f0 03"});
}

TEST(ParseMessage, RejectsOptionNumberOverflow) {  // P12; libcoap t_parse_pdu17
  std::vector<std::byte> d = Bytes("40 01 93 34");
  d.resize(512);
  for (size_t i = 4; i + 1 < d.size() - 4; i += 2) {
    d[i] = std::byte{0xd0};
    d[i + 1] = std::byte{0xff};
  }
  EXPECT_EQ(ErrorOf(d), ParseErrc::kOptionNumberOverflow);
  // One 2-byte extended delta can reach 65804 on its own.
  ExpectRejected(ParseErrc::kOptionNumberOverflow, {"40 02 12 34 e0 ff ff"});
  // 65535 itself is a legal option number.
  {
    const auto ok = Bytes("40 02 12 34 e0 fe f2");
    EXPECT_TRUE(ParseMessage(ok));
  }
}

TEST(ParseMessage, LibcoapOssFuzzReproducerIsAFormatError) {  // P14; libcoap t_parse_pdu15
  const auto d = Bytes(
      "40 5b 5b 5b 8b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 00 00 00 00 00 00 00 00 00 00 00 00 5b 5b "
      "e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 "
      "e0 e0 e0 01 00 00 00 00 00 00 00 e0 c0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 "
      "e0 e0 e4 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b "
      "5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b "
      "5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b "
      "5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b "
      "5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b 5b e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 "
      "e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 01 00 00 00 00 00 00 00 e0 "
      "e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0 e0");
  ASSERT_EQ(d.size(), 285u);
  EXPECT_FALSE(ParseMessage(d));
}

TEST(ParseMessage, RejectsEmptyMessageWithContent) {  // P15; libcoap t_parse_pdu13, t_parse_pdu14
  ExpectRejected(ParseErrc::kNonEmptyEmpty,
                 {"41 00 12 34 aa", "40 00 12 34 ff 41", "40 00 12 34 b1 61",
                  "70 00 12 34 ff 63 6f 6e 74 65 6e 74", "60 00 12 34 ff 63 6f 6e 74 65 6e 74"});
}

TEST(ParseMessage, AcceptsEmptyAckAndReset) {  // libcoap t_parse_pdu11, t_parse_pdu12
  const auto ack_bytes = Bytes("60 00 12 34");
  auto ack = ParseMessage(ack_bytes);
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->type, MessageType::kAcknowledgement);
  const auto rst_bytes = Bytes("70 00 12 34");
  auto rst = ParseMessage(rst_bytes);
  ASSERT_TRUE(rst);
  EXPECT_EQ(rst->type, MessageType::kReset);
}

TEST(ParseMessage, ParsesLibcoapWellFormedVectors) {  // libcoap t_parse_pdu1, 2, 5, 7, 8
  const auto p1 = ParseMessage(test::Retain(Bytes("40 01 93 34")));
  const auto p2 = ParseMessage(test::Retain(Bytes("55 69 12 34 74 6f 6b 65 6e")));
  const auto p5 = ParseMessage(test::Retain(Bytes("55 73 12 34 74 6f 6b 65 6e 00 c1 00")));
  const auto p7 = ParseMessage(
      test::Retain(Bytes("55 73 12 34 74 6f 6b 65 6e 00 c1 00 ff 70 61 79 6c 6f 61 64")));
  const auto p8 = ParseMessage(test::Retain(Bytes("50 73 12 34 ff 70 61 79 6c 6f 61 64")));
  ASSERT_TRUE(p1);
  ASSERT_TRUE(p2);
  ASSERT_TRUE(p5);
  ASSERT_TRUE(p7);
  ASSERT_TRUE(p8);
  EXPECT_EQ(p1->message_id, 0x9334);
  EXPECT_EQ(test::AsText(p2->token), "token");
  EXPECT_EQ(p5->options.size(), 3u);
  EXPECT_TRUE(p5->payload.empty());
  EXPECT_EQ(test::AsText(p7->payload), "payload");
  EXPECT_TRUE(p8->options.empty());
  EXPECT_EQ(test::AsText(p8->payload), "payload");
}

TEST(ParseMessage, FormatErrorDispositionFollowsType) {
  // RFC 7252 §4.2/§4.3: CON → RST; NON, ACK, RST → ignore.
  for (uint8_t type = 0; type < 4; ++type) {
    auto d = Bytes("40 02 12 34 ff");
    d[0] = static_cast<std::byte>(0x40 | type << 4);
    auto m = ParseMessage(d);
    ASSERT_FALSE(m);
    EXPECT_EQ(static_cast<uint8_t>(m.error().type), type);
    EXPECT_EQ(DispositionOf(m.error()), type == 0 ? Disposition::kReset : Disposition::kDrop);
  }
}

TEST(ParseHeader, ReadsHeaderAndTokenOfATruncatedDatagram) {
  // A POST cut in the middle of an option: the header is still answerable.
  const auto d = Bytes("44 02 30 39 de ad be ef bd 40 61 61");
  EXPECT_FALSE(ParseMessage(d));
  auto m = ParseHeader(d);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->message_id, 0x3039);
  EXPECT_EQ(m->token.size(), 4u);
  EXPECT_TRUE(m->options.empty());
  EXPECT_TRUE(m->payload.empty());
  const auto short_token = Bytes("44 02 30 39 de");
  EXPECT_EQ(ParseHeader(short_token).error().errc, ParseErrc::kTruncatedToken);
  const auto v2 = Bytes("84 02 30 39");
  EXPECT_EQ(ParseHeader(v2).error().errc, ParseErrc::kBadVersion);
}

TEST(ParseMessage, ErrorNamesAreStable) {
  EXPECT_EQ(ToString(ParseErrc::kTruncatedOption), "truncated_option");
  EXPECT_EQ(ToString(ParseErrc::kBadVersion), "bad_version");
}

}  // namespace
}  // namespace coapgate::codec
