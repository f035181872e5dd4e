#include "bootstrap/bootstrap_reply.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "codec/code.h"
#include "codec/message.h"
#include "codec/option_iterator.h"
#include "codec/option_number.h"
#include "net/datagram_io.h"

namespace coapgate::bootstrap {
namespace {

constexpr std::string_view kIccid = "8988280666000002864";
constexpr std::string_view kLongestIccid = "8988280666000002864123";  // 22 digits
constexpr std::string_view kPsk = "kQ3v9TzA1bXc7LmN0pR";            // 19 characters
constexpr std::string_view kUrl40 = "coaps://ingest-eu-1.example.net:5684/abc";
static_assert(kLongestIccid.size() == 22 && kPsk.size() == 19 && kUrl40.size() == 40);

std::vector<std::byte> Token(std::initializer_list<int> bytes) {
  std::vector<std::byte> out;
  for (int b : bytes) out.push_back(static_cast<std::byte>(b));
  return out;
}

std::string Payload(std::string_view iccid, std::string_view psk, std::string_view url) {
  std::array<char, 256> out;
  const size_t n = FormatBootstrapPayload(iccid, psk, url, out);
  return {out.data(), n};
}

// The bytes before the payload marker (all of them when there is no payload).
std::span<const std::byte> Head(std::span<const std::byte> datagram,
                                const codec::MessageView& m) {
  return datagram.first(datagram.size() - m.payload.size() - (m.payload.empty() ? 0 : 1));
}

bool Contains89(std::span<const std::byte> bytes) {
  for (size_t i = 0; i + 1 < bytes.size(); ++i) {
    if (bytes[i] == std::byte{0x38} && bytes[i + 1] == std::byte{0x39}) return true;
  }
  return false;
}

bool ContainsNul(std::span<const std::byte> bytes) {
  for (std::byte b : bytes) {
    if (b == std::byte{0}) return true;
  }
  return false;
}

TEST(BootstrapReply, PayloadIsIccidPskUrlSeparatedByCommas) {
  EXPECT_EQ(Payload(kIccid, kPsk, "coaps://ingest.example.net:5684"),
            "8988280666000002864,kQ3v9TzA1bXc7LmN0pR,coaps://ingest.example.net:5684");
}

TEST(BootstrapReply, PayloadRefusesCommasEmptyFieldsAndShortBuffers) {
  std::array<char, 256> out;
  EXPECT_EQ(FormatBootstrapPayload(kIccid, "a,b", kUrl40, out), 0u);
  EXPECT_EQ(FormatBootstrapPayload(kIccid, "", kUrl40, out), 0u);
  EXPECT_EQ(FormatBootstrapPayload("", kPsk, kUrl40, out), 0u);
  EXPECT_EQ(FormatBootstrapPayload(kIccid, kPsk, "coaps://a,b", out), 0u);
  const std::string expected = std::string(kIccid) + "," + std::string(kPsk) + ",x";
  std::vector<char> exact(expected.size());
  EXPECT_EQ(FormatBootstrapPayload(kIccid, kPsk, "x", exact), expected.size());
  EXPECT_EQ(std::string(exact.data(), exact.size()), expected);
  std::vector<char> short_by_one(expected.size() - 1);
  EXPECT_EQ(FormatBootstrapPayload(kIccid, kPsk, "x", short_by_one), 0u);
}

TEST(BootstrapReply, LongestFieldsStayUnder150Bytes) {
  const std::string payload = Payload(kLongestIccid, kPsk, kUrl40);
  ASSERT_FALSE(payload.empty());
  const auto token = Token({1, 2, 3, 4, 5, 6, 7, 8});
  for (bool confirmable : {true, false}) {
    std::array<std::byte, net::kMaxReplySize> out;
    auto reply = EncodeBootstrapReply({confirmable, 0x1234, token}, 0x4242, payload, out);
    ASSERT_TRUE(reply);
    EXPECT_LT(reply->size, kBootstrapDatagramLimit);
    EXPECT_FALSE(reply->oversized);
  }
}

TEST(BootstrapReply, OversizedRepliesAreFlaggedButWritten) {
  const std::string url = "coaps://" + std::string(120, 'h') + ":5684";
  const std::string payload = Payload(kIccid, kPsk, url);
  std::array<std::byte, net::kMaxReplySize> out;
  auto reply = EncodeBootstrapReply({false, 0, {}}, 0x4242, payload, out);
  ASSERT_TRUE(reply);
  EXPECT_GE(reply->size, kBootstrapDatagramLimit);
  EXPECT_TRUE(reply->oversized);

  std::array<std::byte, 16> tiny;
  EXPECT_EQ(EncodeBootstrapReply({false, 0, {}}, 0x4242, payload, tiny).error(),
            codec::EncodeErrc::kBufferTooSmall);
}

TEST(BootstrapReply, ContentIsPlainWithoutContentFormat) {
  const std::string payload = Payload(kIccid, kPsk, kUrl40);
  const auto token = Token({0xde, 0xad});
  std::array<std::byte, net::kMaxReplySize> out;
  auto reply = EncodeBootstrapReply({false, 0x0101, token}, 0x4242, payload, out);
  ASSERT_TRUE(reply);
  auto m = codec::ParseMessage(std::span(out).first(reply->size));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->type, codec::MessageType::kNonConfirmable);
  EXPECT_EQ(m->code, codec::code::kContent);
  EXPECT_EQ(m->message_id, 0x4242);
  EXPECT_EQ(reply->message_id, 0x4242);
  EXPECT_TRUE(std::equal(m->token.begin(), m->token.end(), token.begin(), token.end()));
  EXPECT_TRUE(m->options.empty());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m->payload.data()), m->payload.size()),
            payload);
}

TEST(BootstrapReply, ConIsAPiggybackedAckWithTheDeviceMessageId) {
  const std::string payload = Payload(kIccid, kPsk, kUrl40);
  const auto token = Token({0x39, 0x01, 0x02, 0x03});
  // Whatever the device's MID is, even one spelling "89" or with a zero byte, it is echoed.
  for (uint16_t device_mid : {uint16_t{0x3839}, uint16_t{0x0000}, uint16_t{0x1238},
                              uint16_t{0xbeef}}) {
    std::array<std::byte, net::kMaxReplySize> out;
    auto reply = EncodeBootstrapReply({true, device_mid, token}, 0x4242, payload, out);
    ASSERT_TRUE(reply);
    auto m = codec::ParseMessage(std::span(out).first(reply->size));
    ASSERT_TRUE(m);
    EXPECT_EQ(m->type, codec::MessageType::kAcknowledgement);
    EXPECT_EQ(m->message_id, device_mid);
    EXPECT_EQ(reply->message_id, device_mid);
    EXPECT_TRUE(std::equal(m->token.begin(), m->token.end(), token.begin(), token.end()));
  }
}

TEST(BootstrapReply, SafeMessageIdKeepsASafeCandidate) {
  EXPECT_EQ(SafeBootstrapMessageId(0x4242, {}), 0x4242);
  EXPECT_EQ(SafeBootstrapMessageId(0xffff, {}), 0xffff);
  EXPECT_EQ(SafeBootstrapMessageId(0x3839, {}), 0x383a);
  EXPECT_EQ(SafeBootstrapMessageId(0x0000, {}), 0x0101);
  EXPECT_EQ(SafeBootstrapMessageId(0x1200, {}), 0x1201);
  EXPECT_EQ(SafeBootstrapMessageId(0x1238, {}), 0x1238);
  const auto nine = Token({0x39});
  EXPECT_EQ(SafeBootstrapMessageId(0x1238, nine), 0x1239);
}

// The C SDK's rule, over every MID the picker can return: the tokens are the SDK's (none) and
// ones that would complete "89" with the MID's last byte. Tokens with "89" or 0x00 inside
// are the device's own doing and cannot be helped.
TEST(BootstrapReply, NonRepliesHaveNo89AndNoNulBeforeThePayloadForEveryMid) {
  const std::string payload = Payload(kIccid, kPsk, kUrl40);
  const std::vector<std::vector<std::byte>> tokens = {
      {}, Token({0x39}), Token({0x39, 0x01}), Token({0x38}), Token({1, 2, 3, 4, 5, 6, 7, 8})};
  for (const auto& token : tokens) {
    for (uint32_t candidate = 0; candidate <= 0xffff; ++candidate) {
      const auto mid = static_cast<uint16_t>(candidate);
      for (bool error : {false, true}) {
        std::array<std::byte, net::kMaxReplySize> out;
        auto reply = error ? EncodeBootstrapErrorReply({false, 0x3839, token}, mid,
                                                       BootstrapError::kServerError, out)
                           : EncodeBootstrapReply({false, 0x3839, token}, mid, payload, out);
        ASSERT_TRUE(reply);
        const auto datagram = std::span<const std::byte>(out).first(reply->size);
        auto m = codec::ParseMessage(datagram);
        ASSERT_TRUE(m);
        ASSERT_EQ(m->message_id, reply->message_id);
        const auto head = Head(datagram, *m);
        ASSERT_FALSE(Contains89(head)) << "candidate " << candidate << " token " << token.size();
        ASSERT_FALSE(ContainsNul(head)) << "candidate " << candidate;
        // An error reply has no "89" at all: the SDK fails to parse instead of taking a key.
        if (error) {
          ASSERT_FALSE(Contains89(datagram)) << "candidate " << candidate;
        }
      }
    }
  }
}

// What the 1NCE C SDK does with the reply (reference §3.2): a 150-byte zeroed buffer,
// strstr(buffer, "89"), then strtok(",") twice for the identity and the key.
TEST(BootstrapReply, TheCSdkReadsIdentityAndKeyForEveryServerMid) {
  const std::string payload = Payload(kIccid, kPsk, kUrl40);
  for (uint32_t candidate = 0; candidate <= 0xffff; ++candidate) {
    std::array<std::byte, net::kMaxReplySize> out;
    auto reply =
        EncodeBootstrapReply({false, 1001, {}}, static_cast<uint16_t>(candidate), payload, out);
    ASSERT_TRUE(reply);
    ASSERT_LT(reply->size, kBootstrapDatagramLimit);
    char packet[150] = {};
    std::memcpy(packet, out.data(), reply->size);
    char* resp = std::strstr(packet, "89");
    ASSERT_NE(resp, nullptr) << candidate;
    char* save = nullptr;
    const char* identity = strtok_r(resp, ",", &save);
    const char* key = strtok_r(nullptr, ",", &save);
    ASSERT_NE(identity, nullptr);
    ASSERT_NE(key, nullptr);
    ASSERT_EQ(std::string_view(identity), kIccid) << candidate;
    ASSERT_EQ(std::string_view(key), kPsk) << candidate;
  }
}

void ExpectJsonErrorReply(BootstrapError error, uint8_t code, std::string_view status_text) {
  const std::string_view body = BootstrapErrorBody(error);
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(json.is_discarded()) << body;
  ASSERT_TRUE(json.is_object());
  EXPECT_EQ(json.value("statusText", ""), status_text);
  ASSERT_TRUE(json.contains("errors") && json["errors"].is_array());
  ASSERT_EQ(json["errors"].size(), 1u);
  EXPECT_TRUE(json["errors"][0]["code"].is_string());
  EXPECT_TRUE(json["errors"][0]["message"].is_string());
  EXPECT_FALSE(Contains89(std::as_bytes(std::span(body.data(), body.size()))));
  EXPECT_EQ(BootstrapErrorCode(error), code);

  const auto token = Token({1, 2, 3, 4, 5, 6, 7, 8});
  for (bool confirmable : {true, false}) {
    std::array<std::byte, net::kMaxReplySize> out;
    auto reply = EncodeBootstrapErrorReply({confirmable, 0x7777, token}, 0x4242, error, out);
    ASSERT_TRUE(reply);
    EXPECT_LT(reply->size, kBootstrapDatagramLimit);
    auto m = codec::ParseMessage(std::span(out).first(reply->size));
    ASSERT_TRUE(m);
    EXPECT_EQ(m->code, code);
    EXPECT_EQ(m->message_id, confirmable ? 0x7777 : 0x4242);
    int content_formats = 0;
    for (const codec::OptionView& o : codec::Options(*m)) {
      ASSERT_EQ(o.number, codec::option::kContentFormat);
      EXPECT_EQ(o.AsUint(), std::optional<uint32_t>(kContentFormatJson));
      ++content_formats;
    }
    EXPECT_EQ(content_formats, 1);
    EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(m->payload.data()),
                               m->payload.size()),
              body);
  }
}

TEST(BootstrapReply, UnauthorizedIsJsonWithContentFormat50) {
  ExpectJsonErrorReply(BootstrapError::kUnauthorized, codec::code::kUnauthorized,
                       "Unauthorized");
}

TEST(BootstrapReply, ServerErrorIsJsonWithContentFormat50) {
  ExpectJsonErrorReply(BootstrapError::kServerError, codec::code::kInternalServerError,
                       "Internal Server Error");
}

}  // namespace
}  // namespace coapgate::bootstrap
