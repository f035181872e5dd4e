// DecodeRequest: route, topic and the option rules of RFC 7252 §5.4, §5.7.2, §5.10.
#include "codec/request.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "codec/code.h"
#include "codec/option_number.h"
#include "tests/support/bytes.h"
#include "tests/support/message_builder.h"

namespace coapgate::codec {
namespace {

using test::MessageBuilder;

Result<Request, RequestError> Decode(std::vector<std::byte> datagram) {
  const auto& d = test::Retain(std::move(datagram));
  auto m = ParseMessage(d);
  EXPECT_TRUE(m);
  return DecodeRequest(*m);
}

Route RouteOf(const MessageBuilder& b) {
  auto r = Decode(b.Build());
  EXPECT_TRUE(r);
  return r ? r->route : Route::kUnknown;
}

// The topic of a request that must decode with a valid topic (a view into the retained
// datagram); empty, with a failure, otherwise.
std::string_view ValidTopicOf(const MessageBuilder& b) {
  auto r = Decode(b.Build());
  EXPECT_TRUE(r);
  if (!r) return {};
  EXPECT_EQ(r->topic_status, TopicStatus::kValid);
  return r->topic;
}

// The error of a request that must be refused; a failure, and option 0 with kBadOption, when
// it decodes.
RequestError RefusalOf(const MessageBuilder& b) {
  auto r = Decode(b.Build());
  EXPECT_FALSE(r) << "the request decoded";
  return r ? RequestError{RequestErrc::kBadOption, 0} : r.error();
}

TEST(DecodeRequest, RootWithoutUriPath) {
  EXPECT_EQ(RouteOf(MessageBuilder().Query("t=a")), Route::kRoot);
}

TEST(DecodeRequest, RootAsOneEmptySegment) {  // node-coap-client's "/"
  EXPECT_EQ(RouteOf(MessageBuilder().Path("").Query("t=a")), Route::kRoot);
}

TEST(DecodeRequest, DataAndBootstrap) {
  EXPECT_EQ(RouteOf(MessageBuilder().Path("data")), Route::kData);
  EXPECT_EQ(RouteOf(MessageBuilder().Code(code::kGet).Path("bootstrap")), Route::kBootstrap);
}

TEST(DecodeRequest, OtherPathsAreUnknown) {
  EXPECT_EQ(RouteOf(MessageBuilder().Path("Data")), Route::kUnknown);
  EXPECT_EQ(RouteOf(MessageBuilder().Path("data").Path("")), Route::kUnknown);
  EXPECT_EQ(RouteOf(MessageBuilder().Path("").Path("")), Route::kUnknown);
  EXPECT_EQ(RouteOf(MessageBuilder().Path("x")), Route::kUnknown);
  EXPECT_EQ(RouteOf(MessageBuilder().Path("bootstrap").Path("x")), Route::kUnknown);
}

TEST(DecodeRequest, TopicFromUriQuery) {
  EXPECT_EQ(ValidTopicOf(MessageBuilder().Query("t=sensors/temp_1")), "sensors/temp_1");
}

TEST(DecodeRequest, TopicFromLocationQuery) {
  EXPECT_EQ(ValidTopicOf(MessageBuilder().Option(option::kLocationQuery, "t=loc")), "loc");
}

TEST(DecodeRequest, TopicViewPointsIntoTheDatagram) {
  const auto d = MessageBuilder().Query("t=abc").Build();
  auto m = ParseMessage(d);
  ASSERT_TRUE(m);
  auto r = DecodeRequest(*m);
  ASSERT_TRUE(r);
  EXPECT_GE(reinterpret_cast<const std::byte*>(r->topic.data()), d.data());
  EXPECT_LE(reinterpret_cast<const std::byte*>(r->topic.data() + r->topic.size()),
            d.data() + d.size());
}

TEST(DecodeRequest, EmptyOrMissingTopicIsAbsent) {
  for (const MessageBuilder& b :
       {MessageBuilder(), MessageBuilder().Query("t="), MessageBuilder().Query("t"),
        MessageBuilder().Query("x=1").Query("y")}) {
    auto r = Decode(b.Build());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->topic_status, TopicStatus::kAbsent);
    EXPECT_TRUE(r->topic.empty());
  }
}

TEST(DecodeRequest, OtherQueryKeysAreIgnored) {
  EXPECT_EQ(ValidTopicOf(MessageBuilder().Query("a=1").Query("t=x").Query("tt=2")), "x");
}

TEST(DecodeRequest, InvalidTopics) {  // P23
  for (const char* q : {"t=a//b", "t=a+b", "t=#", "t=a b", "t=\xc3\x28", "t=caf\xc3\xa9"}) {
    auto r = Decode(MessageBuilder().Query(q).Build());
    ASSERT_TRUE(r) << q;
    EXPECT_EQ(r->topic_status, TopicStatus::kInvalid) << q;
    EXPECT_TRUE(r->topic.empty());
  }
}

TEST(DecodeRequest, RepeatedTopicIsInvalid) {
  auto r = Decode(MessageBuilder().Query("t=a").Query("t=b").Build());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->topic_status, TopicStatus::kInvalid);
  auto across = Decode(MessageBuilder().Query("t=a").Option(option::kLocationQuery, "t=b").Build());
  ASSERT_TRUE(across);
  EXPECT_EQ(across->topic_status, TopicStatus::kInvalid);
}

TEST(DecodeRequest, TopicLengthLimits) {  // P23: 253 ok; 254 (Uri-Query 256 bytes) is 4.00
  auto ok = Decode(MessageBuilder().Query("t=" + std::string(253, 'a')).Build());
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->topic_status, TopicStatus::kValid);
  EXPECT_EQ(ok->topic.size(), 253u);
  auto over = Decode(MessageBuilder().Query("t=" + std::string(254, 'a')).Build());
  ASSERT_TRUE(over) << "an over-long t is a bad topic (4.00), not a bad option";
  EXPECT_EQ(over->topic_status, TopicStatus::kInvalid);
  auto far_over = Decode(MessageBuilder().Query("t=" + std::string(600, 'a')).Build());
  ASSERT_TRUE(far_over);
  EXPECT_EQ(far_over->topic_status, TopicStatus::kInvalid);
}

TEST(DecodeRequest, OverlongOtherUriQueryIsBadOption) {  // P22
  for (size_t n : {256u, 300u}) {
    auto r = Decode(MessageBuilder().Query("x=" + std::string(n - 2, 'a')).Build());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().errc, RequestErrc::kBadOption);
    EXPECT_EQ(r.error().option_number, option::kUriQuery);
  }
}

TEST(DecodeRequest, FiftyQueryOptionsAreFine) {  // P23: ~1 KB of query
  MessageBuilder b;
  for (int i = 0; i < 50; ++i) b.Query("k" + std::to_string(i) + "=" + std::string(16, 'v'));
  auto r = Decode(b.Build());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->topic_status, TopicStatus::kAbsent);
}

TEST(DecodeRequest, UnknownCriticalOptionIsBadOption) {  // P18
  auto r = Decode(test::Bytes("40 02 12 34 91 00"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errc, RequestErrc::kBadOption);
  EXPECT_EQ(r.error().option_number, 9);
  EXPECT_EQ(ResponseCodeOf(r.error().errc), code::kBadOption);
}

TEST(DecodeRequest, UnsupportedBlockwiseIsBadOption) {
  auto r = Decode(MessageBuilder().UintOption(option::kBlock1, 0x0e).Build());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().option_number, option::kBlock1);
}

TEST(DecodeRequest, UnknownElectiveOptionIsIgnored) {  // P19
  auto r = Decode(MessageBuilder().Query("t=a").Option(2048, "zz").Build());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->topic, "a");
}

TEST(DecodeRequest, RepeatedCriticalNonRepeatableIsBadOption) {  // P20
  auto r = Decode(MessageBuilder().Option(option::kUriHost, "a").Option(option::kUriHost, "b")
                      .Build());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errc, RequestErrc::kBadOption);
  EXPECT_EQ(r.error().option_number, option::kUriHost);
}

TEST(DecodeRequest, RepeatedElectiveNonRepeatableIsIgnored) {  // P21
  auto r = Decode(MessageBuilder()
                      .UintOption(option::kContentFormat, 50)
                      .UintOption(option::kContentFormat, 0)
                      .Query("t=a")
                      .Build());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->topic, "a");
}

TEST(DecodeRequest, CriticalLengthOutOfRangeIsBadOption) {
  EXPECT_EQ(RefusalOf(MessageBuilder().Option(option::kUriHost, "")).option_number,
            option::kUriHost);
  RefusalOf(MessageBuilder().Option(option::kUriPort, "abc"));  // refused; the option unchecked
  EXPECT_EQ(RefusalOf(MessageBuilder().Path(std::string(256, 'p'))).option_number,
            option::kUriPath);
}

TEST(DecodeRequest, ElectiveLengthOutOfRangeIsIgnored) {
  auto r = Decode(MessageBuilder().Option(option::kContentFormat, "abc").Query("t=a").Build());
  ASSERT_TRUE(r);
  auto loc = Decode(MessageBuilder().Option(option::kLocationQuery, "x=" + std::string(300, 'a'))
                        .Build());
  ASSERT_TRUE(loc);
  EXPECT_EQ(loc->topic_status, TopicStatus::kAbsent);
}

TEST(DecodeRequest, IgnoredHeadersStillParse) {  // Uri-Host, Uri-Port, Accept, Content-Format
  auto r = Decode(MessageBuilder()
                      .Option(option::kUriHost, "coap.os.1nce.com")
                      .UintOption(option::kUriPort, 5683)
                      .Path("")
                      .UintOption(option::kContentFormat, 50)
                      .Query("t=x")
                      .UintOption(option::kAccept, 0)
                      .Build());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->route, Route::kRoot);
  EXPECT_EQ(r->topic, "x");
}

TEST(DecodeRequest, ProxyingIsNotSupported) {
  auto r = Decode(MessageBuilder().Option(option::kProxyUri, "coap://elsewhere/").Build());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errc, RequestErrc::kProxyingNotSupported);
  EXPECT_EQ(ResponseCodeOf(r.error().errc), code::kProxyingNotSupported);
}

TEST(DecodeRequest, BadOptionWinsOverProxying) {
  EXPECT_EQ(RefusalOf(MessageBuilder().Option(option::kProxyUri, "coap://x/").Option(41, "")).errc,
            RequestErrc::kBadOption);
}

TEST(DecodeRequest, Preconditions) {
  EXPECT_EQ(RefusalOf(MessageBuilder().Option(option::kIfNoneMatch, "")).errc,
            RequestErrc::kPreconditionFailed);
  EXPECT_EQ(ResponseCodeOf(RefusalOf(MessageBuilder().Option(option::kIfMatch, "\x01\x02")).errc),
            code::kPreconditionFailed);
  auto any = Decode(MessageBuilder().Option(option::kIfMatch, "\x01").Option(option::kIfMatch, "")
                        .Build());
  EXPECT_TRUE(any) << "an empty If-Match matches any existing representation";
}

TEST(SplitQuery, SplitsAtFirstEquals) {
  const auto d = MessageBuilder().Query("a=b=c").Query("flag").Build();
  auto m = ParseMessage(d);
  ASSERT_TRUE(m);
  std::vector<QueryParam> params;
  ForEachQuery(*m, [&](const QueryParam& q) { params.push_back(q); });
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].key, "a");
  EXPECT_EQ(params[0].value, "b=c");
  EXPECT_EQ(params[1].key, "flag");
  EXPECT_EQ(params[1].value, "");
}

TEST(ForEachQuery, VisitsUriAndLocationQueryInOrder) {
  const auto d = MessageBuilder()
                     .Path("data")
                     .Query("t=a")
                     .Query("x=1")
                     .Option(option::kLocationQuery, "y=2")
                     .Build();
  auto m = ParseMessage(d);
  ASSERT_TRUE(m);
  std::string seen;
  ForEachQuery(*m, [&](const QueryParam& q) {
    seen += std::to_string(q.option_number) + ":" + std::string(q.key) + ";";
  });
  EXPECT_EQ(seen, "15:t;15:x;20:y;");
}

}  // namespace
}  // namespace coapgate::codec
