// TriageDatagram over the reliability catalogue's malformed-datagram cases P01–P29 (the part
// the codec decides) and docs/protocol.md's protocol-level answers, with the exact reply bytes.
#include "codec/triage.h"

#include <gtest/gtest.h>

#include <array>
#include <string>

#include "codec/code.h"
#include "codec/option_number.h"
#include "tests/support/bytes.h"
#include "tests/support/message_builder.h"

namespace coapgate::codec {
namespace {

using test::Bytes;
using test::MessageBuilder;

constexpr uint16_t kNonMid = 0xbeef;

struct Outcome {
  Triage triage;
  std::vector<std::byte> reply;
};

Outcome Triaged(std::vector<std::byte> datagram, TriageLimits limits = {}) {
  Outcome o{TriageDatagram(test::Retain(std::move(datagram)), limits), {}};
  std::array<std::byte, 2048> out{};
  auto n = EncodeTriageReply(o.triage, limits, kNonMid, out);
  EXPECT_TRUE(n);
  if (n) o.reply.assign(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(*n));
  return o;
}

void ExpectDrop(const std::vector<std::byte>& d, Reason reason) {
  const Outcome o = Triaged(d);
  EXPECT_EQ(o.triage.action, Action::kDrop) << ToString(o.triage.reason);
  EXPECT_EQ(o.triage.reason, reason) << ToString(o.triage.reason);
  EXPECT_TRUE(o.reply.empty());
}

void ExpectReset(const std::vector<std::byte>& d, Reason reason, const char* reply_hex) {
  const Outcome o = Triaged(d);
  EXPECT_EQ(o.triage.action, Action::kReset) << ToString(o.triage.reason);
  EXPECT_EQ(o.triage.reason, reason) << ToString(o.triage.reason);
  EXPECT_EQ(o.reply, Bytes(reply_hex));
}

Outcome ExpectRespond(const std::vector<std::byte>& d, Reason reason, uint8_t code) {
  Outcome o = Triaged(d);
  EXPECT_EQ(o.triage.action, Action::kRespond) << ToString(o.triage.reason);
  EXPECT_EQ(o.triage.reason, reason) << ToString(o.triage.reason);
  EXPECT_EQ(o.triage.response_code, code);
  return o;
}

Triage ExpectRequest(const std::vector<std::byte>& d) {
  const Outcome o = Triaged(d);
  EXPECT_EQ(o.triage.action, Action::kRequest) << ToString(o.triage.reason);
  EXPECT_TRUE(o.reply.empty());
  return o.triage;
}

TEST(Triage, P01MinimalConPostIsARequest) {
  const Triage t = ExpectRequest(Bytes("40 02 12 34"));
  EXPECT_EQ(t.request.route, Route::kRoot);
  EXPECT_EQ(t.request.topic_status, TopicStatus::kAbsent);
}

TEST(Triage, P02OtherVersionsAreDropped) {
  for (const char* hex : {"00 02 12 34", "80 02 12 34", "c0 02 12 34"}) {
    ExpectDrop(Bytes(hex), Reason::kBadVersion);
  }
}

TEST(Triage, P03TruncatedHeaderIsDropped) {
  for (const char* hex : {"40", "40 02", "40 02 12"}) ExpectDrop(Bytes(hex), Reason::kTooShort);
}

TEST(Triage, P04P05ReservedTokenLengthIsReset) {
  ExpectReset(Bytes("49 02 12 34 01 02 03 04 05 06 07 08 09"), Reason::kFormatError,
              "70 00 12 34");
  for (const char* hex : {"4d 02 12 34 00", "4e 02 12 34 00 00", "4f 02 12 34"}) {
    ExpectReset(Bytes(hex), Reason::kFormatError, "70 00 12 34");
  }
}

TEST(Triage, P06TruncatedTokenIsReset) {
  ExpectReset(Bytes("48 02 12 34 01 02 03"), Reason::kFormatError, "70 00 12 34");
}

TEST(Triage, P07MarkerWithoutPayloadIsReset) {
  ExpectReset(Bytes("40 02 12 34 ff"), Reason::kFormatError, "70 00 12 34");
}

TEST(Triage, P08P09ReservedNibblesAreReset) {
  ExpectReset(Bytes("40 02 12 34 f0"), Reason::kFormatError, "70 00 12 34");
  ExpectReset(Bytes("40 02 12 34 bf 00"), Reason::kFormatError, "70 00 12 34");
}

TEST(Triage, P10P11TruncatedOptionsAreReset) {
  ExpectReset(Bytes("40 02 12 34 be 01"), Reason::kFormatError, "70 00 12 34");
  ExpectReset(Bytes("40 02 12 34 b5 61 62"), Reason::kFormatError, "70 00 12 34");
}

TEST(Triage, P12OptionNumberOverflowIsReset) {
  std::vector<std::byte> d = Bytes("40 01 93 34");
  for (int i = 0; i < 250; ++i) {
    d.push_back(std::byte{0xd0});
    d.push_back(std::byte{0xff});
  }
  ExpectReset(d, Reason::kFormatError, "70 00 93 34");
}

TEST(Triage, P13TokenLongerThanDatagramInNonIsDropped) {
  ExpectDrop(Bytes("5a 0a 5b 5b"), Reason::kFormatError);
}

TEST(Triage, FormatErrorsInNonAreDropped) {
  ExpectDrop(Bytes("50 02 12 34 ff"), Reason::kFormatError);
  ExpectDrop(Bytes("50 02 12 34 b5 61"), Reason::kFormatError);
}

TEST(Triage, P15EmptyWithTokenOrPayloadIsReset) {
  ExpectReset(Bytes("41 00 12 34 aa"), Reason::kFormatError, "70 00 12 34");
  ExpectReset(Bytes("40 00 12 34 ff 41"), Reason::kFormatError, "70 00 12 34");
}

TEST(Triage, P16PingIsReset) {
  ExpectReset(Bytes("40 00 12 34"), Reason::kPing, "70 00 12 34");
}

TEST(Triage, EmptyNonIsDropped) { ExpectDrop(Bytes("50 00 12 34"), Reason::kFormatError); }

TEST(Triage, P17AckAndResetAreDropped) {
  ExpectDrop(Bytes("60 00 12 34 ff 63"), Reason::kFormatError);
  ExpectDrop(Bytes("70 00 12 34 ff 63"), Reason::kFormatError);
  ExpectDrop(Bytes("60 00 12 34"), Reason::kStrayAckOrReset);
  ExpectDrop(Bytes("70 00 12 34"), Reason::kStrayAckOrReset);
  ExpectDrop(Bytes("60 44 12 34"), Reason::kStrayAckOrReset);
}

TEST(Triage, P18UnknownCriticalOptionIs402) {
  const Outcome o = ExpectRespond(Bytes("40 02 12 34 91 00"), Reason::kBadOption,
                                  code::kBadOption);
  EXPECT_EQ(o.triage.option_number, 9);
  EXPECT_EQ(o.reply, test::Concat(Bytes("60 82 12 34 ff"), test::Text("Bad Option")));
}

TEST(Triage, UnknownCriticalOptionInNonIsRejectedWithReset) {
  ExpectReset(Bytes("50 02 12 34 91 00"), Reason::kBadOption, "70 00 12 34");
}

TEST(Triage, P19UnknownElectiveOptionIsIgnored) {
  ExpectRequest(MessageBuilder().Query("t=a").Option(2048, "x").Payload("p").Build());
}

TEST(Triage, P20RepeatedUriHostIs402) {
  ExpectRespond(MessageBuilder().Option(option::kUriHost, "a").Option(option::kUriHost, "b")
                    .Build(),
                Reason::kBadOption, code::kBadOption);
}

TEST(Triage, P21RepeatedContentFormatIsIgnored) {
  ExpectRequest(MessageBuilder().UintOption(12, 0).UintOption(12, 50).Payload("x").Build());
}

TEST(Triage, P22OverlongUriQueryIs402) {
  ExpectRespond(MessageBuilder().Query("k=" + std::string(280, 'v')).Build(), Reason::kBadOption,
                code::kBadOption);
}

TEST(Triage, P23BadTopicsReachTheEngineAsInvalid) {
  for (const std::string& q : {"t=" + std::string(254, 'a'), std::string("t=a//b"),
                               std::string("t=a+b"), std::string("t=#"),
                               std::string("t=\xff\xfe")}) {
    const Triage t = ExpectRequest(MessageBuilder().Query(q).Payload("x").Build());
    EXPECT_EQ(t.request.topic_status, TopicStatus::kInvalid) << q;
  }
  const Triage empty = ExpectRequest(MessageBuilder().Query("t=").Build());
  EXPECT_EQ(empty.request.topic_status, TopicStatus::kAbsent);
}

TEST(Triage, P24UnsolicitedResponseIsReset) {
  ExpectReset(Bytes("40 45 12 34"), Reason::kUnsolicitedResponse, "70 00 12 34");
  ExpectDrop(Bytes("50 45 12 34"), Reason::kUnsolicitedResponse);
}

TEST(Triage, P25UnsupportedMethodsAre405) {
  for (unsigned detail = 3; detail < 32; ++detail) {
    const auto d = MessageBuilder().Code(MakeCode(0, detail)).Build();
    ExpectRespond(d, Reason::kMethodNotAllowed, code::kMethodNotAllowed);
  }
}

TEST(Triage, P26ReservedCodeClassesAreReset) {
  for (unsigned cls : {1u, 3u, 6u, 7u}) {
    auto con = MessageBuilder().Code(MakeCode(cls, 1)).Build();
    ExpectReset(con, Reason::kReservedCode, "70 00 12 34");
    auto non = MessageBuilder().Non().Code(MakeCode(cls, 1)).Build();
    ExpectDrop(non, Reason::kReservedCode);
  }
}

TEST(Triage, P27OversizePayloadIs413WithSize1) {
  for (size_t size : {1025u, 1500u, 9000u, 65000u}) {
    const auto d = MessageBuilder().Query("t=a").Payload(std::string(size, 'x')).Build();
    const Outcome o = ExpectRespond(d, Reason::kPayloadTooLarge, code::kRequestEntityTooLarge);
    // ACK 4.13, Size1 = 1024 (delta 60: d2 2f 04 00), diagnostic payload.
    EXPECT_EQ(o.reply,
              test::Concat(Bytes("60 8d 12 34 d2 2f 04 00 ff"), test::Text("Request Entity Too Large")));
  }
  ExpectRequest(MessageBuilder().Payload(std::string(1024, 'x')).Build());
}

TEST(Triage, MaxPayloadIsConfigurable) {
  TriageLimits small;
  small.max_payload = 8;
  const auto d = MessageBuilder().Payload("123456789").Build();
  EXPECT_EQ(Triaged(d, small).triage.action, Action::kRespond);
  EXPECT_EQ(Triaged(MessageBuilder().Payload("12345678").Build(), small).triage.action,
            Action::kRequest);
}

TEST(Triage, P28BlockwiseIsUnsupportedBadOption) {
  // Block1 NUM=0 M=1 SZX=7.
  ExpectRespond(MessageBuilder().UintOption(option::kBlock1, 0x0f).Payload("x").Build(),
                Reason::kBadOption, code::kBadOption);
}

TEST(Triage, P29ContentFormatIsNotValidated) {
  ExpectRequest(MessageBuilder().UintOption(option::kContentFormat, 50).Payload("\x01garbage{")
                    .Build());
}

TEST(Triage, GetOnIngestPathsIs404LikeTheReference) {
  const Outcome root = ExpectRespond(MessageBuilder().Code(code::kGet).Query("t=1").Build(),
                                     Reason::kNotFound, code::kNotFound);
  EXPECT_EQ(root.reply, test::Concat(Bytes("60 84 12 34 ff"), test::Text("Not Found")));
  ExpectRespond(MessageBuilder().Code(code::kGet).Path("data").Build(), Reason::kNotFound,
                code::kNotFound);
}

TEST(Triage, NonGetGetsANonResponseWithTheToken) {
  const Outcome o = ExpectRespond(MessageBuilder().Non().Code(code::kGet).Token(Bytes("0a 0b"))
                                      .Build(),
                                  Reason::kNotFound, code::kNotFound);
  EXPECT_EQ(o.reply, test::Concat(Bytes("52 84 be ef 0a 0b ff"), test::Text("Not Found")));
}

TEST(Triage, OtherMethodsOnKnownPathsAre405) {
  ExpectRespond(MessageBuilder().Code(code::kPut).Build(), Reason::kMethodNotAllowed,
                code::kMethodNotAllowed);
  ExpectRespond(MessageBuilder().Code(code::kDelete).Path("data").Build(),
                Reason::kMethodNotAllowed, code::kMethodNotAllowed);
  ExpectRespond(MessageBuilder().Code(code::kPost).Path("bootstrap").Build(),
                Reason::kMethodNotAllowed, code::kMethodNotAllowed);
}

TEST(Triage, UnknownPathIs404) {
  ExpectRespond(MessageBuilder().Path("nope").Build(), Reason::kNotFound, code::kNotFound);
}

TEST(Triage, IngestAndBootstrapRequests) {
  const Triage post = ExpectRequest(
      MessageBuilder().Token(Bytes("01 02 03 04")).Path("").Query("t=a/b").Payload("hi").Build());
  EXPECT_EQ(post.request.route, Route::kRoot);
  EXPECT_EQ(post.request.topic, "a/b");
  EXPECT_EQ(test::AsText(post.message.payload), "hi");
  const Triage data = ExpectRequest(MessageBuilder().Non().Path("data").Payload("x").Build());
  EXPECT_EQ(data.request.route, Route::kData);
  const Triage boot = ExpectRequest(MessageBuilder().Code(code::kGet).Path("bootstrap").Build());
  EXPECT_EQ(boot.request.route, Route::kBootstrap);
}

TEST(Triage, ProxyAndPreconditionAnswers) {
  ExpectRespond(MessageBuilder().Option(option::kProxyScheme, "http").Build(),
                Reason::kProxyingNotSupported, code::kProxyingNotSupported);
  ExpectRespond(MessageBuilder().Option(option::kIfNoneMatch, "").Build(),
                Reason::kPreconditionFailed, code::kPreconditionFailed);
}

TEST(Triage, ReasonNamesAreStable) {
  EXPECT_EQ(ToString(Reason::kStrayAckOrReset), "stray_ack_or_reset");
  EXPECT_EQ(ToString(Reason::kPayloadTooLarge), "payload_too_large");
}

}  // namespace
}  // namespace coapgate::codec
