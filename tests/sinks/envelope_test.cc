// The TELEMETRY_DATA envelope byte for byte (docs/downstream.md), the bounds contract of every writer,
// base64 (RFC 4648 §10 vectors), JSON escaping, and the message id's stability (docs/delivery.md, I6).
#include "sinks/envelope.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <xxhash.h>

namespace coapgate::sinks {
namespace {

constexpr char kGuard = '\x5a';  // written around buffers to catch out-of-bounds writes
constexpr size_t kGuardSize = 16;

std::span<const std::byte> AsBytes(std::string_view text) {
  return std::as_bytes(std::span<const char>(text.data(), text.size()));
}

std::string IdText(const MessageId& id) {
  std::string text(kMessageIdTextLength, '?');
  EXPECT_EQ(FormatMessageId(id, text.data()), kMessageIdTextLength);
  return text;
}

// Formats into a buffer of exactly MaxEnvelopeSize(f) chars, surrounded by guard bytes.
std::string Format(const EnvelopeFields& f) {
  const size_t size = MaxEnvelopeSize(f);
  std::vector<char> buffer(size + 2 * kGuardSize, kGuard);
  const size_t n = FormatTelemetryEnvelope(f, std::span<char>(buffer).subspan(kGuardSize, size));
  EXPECT_EQ(n, size) << "MaxEnvelopeSize is documented as exact";
  for (size_t i = 0; i < kGuardSize; ++i) {
    EXPECT_EQ(buffer[i], kGuard);
    EXPECT_EQ(buffer[kGuardSize + size + i], kGuard);
  }
  return std::string(buffer.data() + kGuardSize, n);
}

std::string Escape(std::string_view in) {
  std::vector<char> buffer(6 * in.size() + 1);
  const size_t n = JsonEscape(in, buffer);
  EXPECT_EQ(n, JsonEscapedLength(in));
  return std::string(buffer.data(), n);
}

std::string Base64(std::string_view in) {
  std::string out(Base64Length(in.size()), '?');
  EXPECT_EQ(Base64Encode(AsBytes(in), out.data()), out.size());
  return out;
}

// The reference example (1nce-coap-endpoint.md §6.1, docs/downstream.md).
constexpr std::string_view kIccid = "8988280666000002864";
constexpr std::string_view kImsi = "901405100002864";
constexpr std::string_view kIp = "100.91.200.24";
constexpr std::string_view kPayload = "Hi 1NCEOS";
constexpr uint64_t kReceived = 1670598749915;
const std::vector<std::byte> kToken = {std::byte{0xde}, std::byte{0xad}, std::byte{0xbe},
                                       std::byte{0xef}};

EnvelopeFields ExampleFields() {
  EnvelopeFields f{};
  f.id = MakeMessageId(kIccid, 0x3039, kToken, "test", AsBytes(kPayload));
  f.received_ms = kReceived;
  f.iccid = kIccid;
  f.imsi = kImsi;
  f.ip = kIp;
  f.topic = "test";
  f.payload = AsBytes(kPayload);
  return f;
}

// Everything after the id, which the id tests cover on their own.
std::string AfterId(const EnvelopeFields& f) {
  const std::string line = Format(f);
  const std::string head = "{\"id\":\"" + IdText(f.id) + "\"";
  EXPECT_EQ(line.substr(0, head.size()), head);
  return line.substr(std::min(head.size(), line.size()));
}

constexpr std::string_view kFixedHead =
    ",\"type\":\"TELEMETRY_DATA\",\"source\":\"COAP\",\"version\":\"1.0.0\","
    "\"received\":\"1670598749915\",";
// The example's "device" member, and its "payload" member up to the topic (base64 of kPayload).
const std::string kDevice =
    R"("device":{"iccid":"8988280666000002864","imsi":"901405100002864","ip":"100.91.200.24"},)";
const std::string kDeviceWithoutImsi =
    R"("device":{"iccid":"8988280666000002864","ip":"100.91.200.24"},)";
const std::string kStringPayload =
    R"("payload":{"type":"STRING","encoding":"base64","value":"SGkgMU5DRU9T")";

// ---- FormatTelemetryEnvelope ------------------------------------------------------------

TEST(FormatTelemetryEnvelope, ReferenceExampleByteForByte) {
  const EnvelopeFields f = ExampleFields();
  EXPECT_EQ(Format(f),
            "{\"id\":\"" + IdText(f.id) +
                "\",\"type\":\"TELEMETRY_DATA\",\"source\":\"COAP\",\"version\":\"1.0.0\","
                "\"received\":\"1670598749915\",\"device\":{\"iccid\":\"8988280666000002864\","
                "\"imsi\":\"901405100002864\",\"ip\":\"100.91.200.24\"},\"payload\":{\"type\":"
                "\"STRING\",\"encoding\":\"base64\",\"value\":\"SGkgMU5DRU9T\",\"topic\":"
                "\"test\"}}");
}

TEST(FormatTelemetryEnvelope, NoTopicMeansNoTopicMember) {
  EnvelopeFields f = ExampleFields();
  f.topic = {};
  const std::string line = Format(f);
  EXPECT_EQ(line.find("topic"), std::string::npos);
  EXPECT_EQ(AfterId(f), std::string(kFixedHead) + kDevice + kStringPayload + "}}");
}

TEST(FormatTelemetryEnvelope, EmptyImsiIsOmitted) {
  EnvelopeFields f = ExampleFields();
  f.imsi = {};
  EXPECT_EQ(AfterId(f), std::string(kFixedHead) +
                            kDeviceWithoutImsi + kStringPayload + R"(,"topic":"test"}})");
}

TEST(FormatTelemetryEnvelope, Ipv6Address) {
  EnvelopeFields f = ExampleFields();
  f.ip = "2001:db8::ff00:42:8329";
  EXPECT_NE(Format(f).find("\"ip\":\"2001:db8::ff00:42:8329\"},"), std::string::npos);
}

TEST(FormatTelemetryEnvelope, EmptyPayloadIsEmptyString) {
  EnvelopeFields f = ExampleFields();
  f.payload = {};
  EXPECT_NE(Format(f).find(
                "\"payload\":{\"type\":\"STRING\",\"encoding\":\"base64\",\"value\":\"\","
                "\"topic\":\"test\"}}"),
            std::string::npos);
}

TEST(FormatTelemetryEnvelope, BinaryPayloadWithZeroBytes) {
  EnvelopeFields f = ExampleFields();
  const std::vector<std::byte> payload = {std::byte{0x00}, std::byte{0x00}, std::byte{0xff},
                                          std::byte{0x00}, std::byte{0x01}};
  f.payload = payload;
  const std::string line = Format(f);
  EXPECT_NE(line.find("\"value\":\"AAD/AAE=\""), std::string::npos) << line;
  EXPECT_EQ(line.find('\0'), std::string::npos);
}

TEST(FormatTelemetryEnvelope, TranslatedPayloadIsVerbatimJson) {
  EnvelopeFields f = ExampleFields();
  f.json_payload =
      "{\"data_type\":\"Energy_Saver\",\"battery_level\":99,\"signal_strength\":84,"
      "\"software_version\":\"2.2.1\"}";
  EXPECT_EQ(AfterId(f), std::string(kFixedHead) + kDevice + R"("payload":{"type":"JSON","value":)" +
                            std::string(f.json_payload) + R"(,"topic":"test"}})");
}

TEST(FormatTelemetryEnvelope, TranslatedPayloadWithoutTopic) {
  EnvelopeFields f = ExampleFields();
  f.topic = {};
  f.json_payload = "{}";
  const std::string line = Format(f);
  const std::string_view tail = "\"},\"payload\":{\"type\":\"JSON\",\"value\":{}}}";
  ASSERT_GE(line.size(), tail.size());
  EXPECT_EQ(line.substr(line.size() - tail.size()), tail);
}

TEST(FormatTelemetryEnvelope, EscapesTextFields) {
  EnvelopeFields f = ExampleFields();
  f.iccid = "89\"}";
  f.topic = "a\\b\n";
  const std::string line = Format(f);
  EXPECT_NE(line.find("\"iccid\":\"89\\\"}\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"topic\":\"a\\\\b\\u000a\"}}"), std::string::npos) << line;
}

TEST(FormatTelemetryEnvelope, LargestTimestamp) {
  EnvelopeFields f = ExampleFields();
  f.received_ms = UINT64_MAX;
  EXPECT_NE(Format(f).find("\"received\":\"18446744073709551615\""), std::string::npos);
  f.received_ms = 0;
  EXPECT_NE(Format(f).find("\"received\":\"0\""), std::string::npos);
}

// Every buffer shorter than the envelope fails with 0 and leaves the bytes past its end alone.
void ExpectEveryShortBufferFails(const EnvelopeFields& f) {
  const size_t exact = MaxEnvelopeSize(f);
  const std::string expected = Format(f);
  ASSERT_EQ(expected.size(), exact);
  std::vector<char> buffer(exact + kGuardSize);
  for (size_t size = 0; size < exact; ++size) {
    std::fill(buffer.begin(), buffer.end(), kGuard);
    ASSERT_EQ(FormatTelemetryEnvelope(f, std::span<char>(buffer).first(size)), 0u)
        << "size " << size;
    for (size_t i = size; i < buffer.size(); ++i) {
      ASSERT_EQ(buffer[i], kGuard) << "wrote at " << i << " with a buffer of " << size;
    }
  }
  // A larger buffer than needed is fine and gets the same bytes.
  std::fill(buffer.begin(), buffer.end(), kGuard);
  ASSERT_EQ(FormatTelemetryEnvelope(f, buffer), exact);
  EXPECT_EQ(std::string(buffer.data(), exact), expected);
}

TEST(FormatTelemetryEnvelope, EveryShortBufferFailsWithoutWritingPastIt) {
  EnvelopeFields f = ExampleFields();
  ExpectEveryShortBufferFails(f);
  f.topic = "t\"\x01\xc3\xa9\xff";  // escapes of every width inside the last text field
  ExpectEveryShortBufferFails(f);
  f.json_payload = "{\"motion\":true}";
  ExpectEveryShortBufferFails(f);
  f.imsi = {};
  f.topic = {};
  ExpectEveryShortBufferFails(f);
}

// An independent UTF-8 check for the random test: decode, then check the scalar's range.
bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    uint32_t min;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1, cp = c & 0x1fu, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, cp = c & 0x0fu, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, cp = c & 0x07u, min = 0x10000;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // the sequence is cut off
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = cp << 6 | (cc & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

std::string RandomText(std::mt19937& rng, size_t max_size) {
  std::uniform_int_distribution<size_t> size(0, max_size);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> kind(0, 3);
  std::string s(size(rng), '\0');
  for (char& c : s) {
    // Mostly printable ASCII, with enough control and high bytes to hit every escape path.
    c = static_cast<char>(kind(rng) == 0 ? byte(rng) : 0x20 + byte(rng) % 0x5f);
  }
  return s;
}

TEST(MaxEnvelopeSize, ExactForRandomFields) {
  std::mt19937 rng(20240611);
  for (int round = 0; round < 2000; ++round) {
    const std::string iccid = RandomText(rng, 24);
    const std::string imsi = RandomText(rng, 16);
    const std::string ip = RandomText(rng, 46);
    const std::string topic = RandomText(rng, 260);
    const std::string payload = RandomText(rng, 1100);
    const std::string json = round % 3 == 0 ? "{\"x\":" + std::to_string(round) + "}" : "";
    EnvelopeFields f{};
    f.id = {rng(), rng()};
    f.received_ms = uint64_t{rng()} << 32 | rng();
    f.iccid = iccid;
    f.imsi = imsi;
    f.ip = ip;
    f.topic = topic;
    f.payload = AsBytes(payload);
    f.json_payload = json;
    const size_t bound = MaxEnvelopeSize(f);
    std::vector<char> buffer(bound + 6 * 400 + 2048 + 64);  // generous: bound could be wrong
    const size_t n = FormatTelemetryEnvelope(f, buffer);
    ASSERT_NE(n, 0u);
    ASSERT_GE(bound, n);
    ASSERT_EQ(bound, n);
    const std::string_view line(buffer.data(), n);
    EXPECT_TRUE(IsValidUtf8(line)) << "round " << round;
    for (char c : line) ASSERT_GE(static_cast<unsigned char>(c), 0x20) << "round " << round;
  }
}

// ---- Base64 -----------------------------------------------------------------------------

TEST(Base64Encode, Rfc4648Vectors) {
  EXPECT_EQ(Base64(""), "");
  EXPECT_EQ(Base64("f"), "Zg==");
  EXPECT_EQ(Base64("fo"), "Zm8=");
  EXPECT_EQ(Base64("foo"), "Zm9v");
  EXPECT_EQ(Base64("foob"), "Zm9vYg==");
  EXPECT_EQ(Base64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(Base64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64("Hi 1NCEOS"), "SGkgMU5DRU9T");
}

TEST(Base64Encode, WholeAlphabet) {
  const std::vector<uint8_t> in = {0x00, 0x10, 0x83, 0x10, 0x51, 0x87, 0x20, 0x92, 0x8b, 0x30,
                                   0xd3, 0x8f, 0x41, 0x14, 0x93, 0x51, 0x55, 0x97, 0x61, 0x96,
                                   0x9b, 0x71, 0xd7, 0x9f, 0x82, 0x18, 0xa3, 0x92, 0x59, 0xa7,
                                   0xa2, 0x9a, 0xab, 0xb2, 0xdb, 0xaf, 0xc3, 0x1c, 0xb3, 0xd3,
                                   0x5d, 0xb7, 0xe3, 0x9e, 0xbb, 0xf3, 0xdf, 0xbf};
  std::string out(Base64Length(in.size()), '?');
  ASSERT_EQ(Base64Encode(std::as_bytes(std::span(in)), out.data()), 64u);
  EXPECT_EQ(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
}

TEST(Base64Length, RoundsUpToWholeQuads) {
  static_assert(Base64Length(0) == 0);
  static_assert(Base64Length(1) == 4);
  static_assert(Base64Length(3) == 4);
  static_assert(Base64Length(4) == 8);
  static_assert(Base64Length(1024) == 1368);
}

// ---- JsonEscape -------------------------------------------------------------------------

TEST(JsonEscape, AsciiEscapes) {
  EXPECT_EQ(Escape("plain text/123"), "plain text/123");
  EXPECT_EQ(Escape("a\"b"), "a\\\"b");
  EXPECT_EQ(Escape("a\\b"), "a\\\\b");
  EXPECT_EQ(Escape("a\nb"), "a\\u000ab");
  EXPECT_EQ(Escape(std::string_view("\x01", 1)), "\\u0001");
  EXPECT_EQ(Escape(std::string_view("\0\x1f", 2)), "\\u0000\\u001f");
  EXPECT_EQ(Escape("\x7f"), "\x7f");  // DEL is not a JSON control character
}

TEST(JsonEscape, ValidUtf8PassesThrough) {
  EXPECT_EQ(Escape("caf\xc3\xa9"), "caf\xc3\xa9");                // é, 2 bytes
  EXPECT_EQ(Escape("\xe2\x82\xac"), "\xe2\x82\xac");              // €, 3 bytes
  EXPECT_EQ(Escape("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");      // U+1F600, 4 bytes
  EXPECT_EQ(Escape("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf");      // U+10FFFF, the last
}

TEST(JsonEscape, InvalidUtf8BecomesReplacementCharacter) {
  EXPECT_EQ(Escape("\xff"), "\\ufffd");
  EXPECT_EQ(Escape("a\xff" "b"), "a\\ufffdb");
  EXPECT_EQ(Escape("\xc3"), "\\ufffd");                      // truncated at the end
  EXPECT_EQ(Escape("\xc3" "a"), "\\ufffda");                 // continuation missing
  EXPECT_EQ(Escape("\xa9"), "\\ufffd");                      // lone continuation byte
  EXPECT_EQ(Escape("\xc0\xaf"), "\\ufffd\\ufffd");           // overlong '/'
  EXPECT_EQ(Escape("\xe0\x80\xaf"), "\\ufffd\\ufffd\\ufffd");  // overlong, 3 bytes
  EXPECT_EQ(Escape("\xed\xa0\x80"), "\\ufffd\\ufffd\\ufffd");  // surrogate U+D800
  EXPECT_EQ(Escape("\xf4\x90\x80\x80"), "\\ufffd\\ufffd\\ufffd\\ufffd");  // above U+10FFFF
  EXPECT_EQ(Escape("\xf5\x80"), "\\ufffd\\ufffd");
  // A truncated sequence is one maximal subpart: one U+FFFD, then the next byte on its own.
  EXPECT_EQ(Escape("\xf0\x9f\x98" "a"), "\\ufffda");
  EXPECT_EQ(Escape("\xe2\x82"), "\\ufffd");
}

TEST(JsonEscape, TooSmallReturnsZeroWithinBounds) {
  const std::string_view in = "a\"\x01\xc3\xa9\xff" "z";
  const size_t exact = JsonEscapedLength(in);
  ASSERT_EQ(exact, 1u + 2 + 6 + 2 + 6 + 1);
  std::vector<char> buffer(exact + kGuardSize);
  for (size_t size = 0; size < exact; ++size) {
    std::fill(buffer.begin(), buffer.end(), kGuard);
    EXPECT_EQ(JsonEscape(in, std::span<char>(buffer).first(size)), 0u) << size;
    for (size_t i = size; i < buffer.size(); ++i) ASSERT_EQ(buffer[i], kGuard) << size;
  }
  EXPECT_EQ(JsonEscape(in, std::span<char>(buffer).first(exact)), exact);
}

TEST(JsonEscape, EmptyInputWritesNothing) {
  EXPECT_EQ(JsonEscape("", std::span<char>()), 0u);
  EXPECT_EQ(JsonEscapedLength(""), 0u);
}

TEST(JsonEscape, RandomBytesGiveValidJsonStringContent) {
  std::mt19937 rng(7);
  for (int round = 0; round < 5000; ++round) {
    const std::string in = RandomText(rng, 64);
    const std::string out = Escape(in);
    EXPECT_LE(out.size(), 6 * in.size());
    EXPECT_TRUE(IsValidUtf8(out));
    // JSON string content (RFC 8259 §7): no raw control chars or quotes, and every
    // backslash starts \", \\ or \u and 4 hex digits.
    for (size_t i = 0; i < out.size(); ++i) {
      const auto c = static_cast<unsigned char>(out[i]);
      ASSERT_GE(c, 0x20);
      ASSERT_NE(c, '"');
      if (c != '\\') continue;
      ASSERT_LT(i + 1, out.size());
      if (out[i + 1] == 'u') {
        ASSERT_LE(i + 6, out.size());
        for (size_t k = i + 2; k < i + 6; ++k) {
          ASSERT_TRUE(std::isxdigit(static_cast<unsigned char>(out[k])));
        }
        i += 5;
      } else {
        ASSERT_TRUE(out[i + 1] == '"' || out[i + 1] == '\\') << out;
        ++i;
      }
    }
    const bool needs_no_escape =
        IsValidUtf8(in) && std::none_of(in.begin(), in.end(), [](char c) {
          return c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20;
        });
    if (needs_no_escape) {
      EXPECT_EQ(out, in);
    }
  }
}

// ---- MessageId --------------------------------------------------------------------------

TEST(FormatMessageId, UuidShape) {
  EXPECT_EQ(IdText({0x0123456789abcdef, 0xfedcba9876543210}),
            "01234567-89ab-cdef-fedc-ba9876543210");
  EXPECT_EQ(IdText({0, 0}), "00000000-0000-0000-0000-000000000000");
  const std::string text = IdText(ExampleFields().id);
  ASSERT_EQ(text.size(), 36u);
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      EXPECT_EQ(text[i], '-') << i;
    } else {
      EXPECT_TRUE((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f'))
          << i << ": " << text;
    }
  }
}

MessageId Id(std::string_view iccid, uint16_t mid, std::string_view token,
             std::string_view topic, std::string_view payload) {
  return MakeMessageId(iccid, mid, AsBytes(token), topic, AsBytes(payload));
}

TEST(MakeMessageId, SameRequestSameId) {
  EXPECT_EQ(Id("8988280666000002864", 12345, "\xde\xad", "test", "Hi 1NCEOS"),
            Id("8988280666000002864", 12345, "\xde\xad", "test", "Hi 1NCEOS"));
  // Views into different buffers with the same bytes.
  const std::string a = "payload";
  const std::string b = a;
  EXPECT_EQ(Id("89", 1, "", "", a), Id("89", 1, "", "", b));
}

// Pinned: the id is a persisted format (consumers compare ids across coapgate versions). If
// this fails, the encoding changed, and duplicates across the upgrade will not be dropped.
TEST(MakeMessageId, StableAcrossVersions) {
  EXPECT_EQ(IdText(ExampleFields().id), "15d5cb05-ebcc-6516-5f72-ab6d0e858d66");
  EXPECT_EQ(IdText(Id("", 0, "", "", "")), "52600de6-91b6-589e-1df1-5e785fdbb8c9");
}

// The encoding documented in envelope.cc, built in memory and hashed in one shot: the
// streaming implementation must agree with it.
TEST(MakeMessageId, MatchesDocumentedEncoding) {
  std::string encoding = "coapgate.MessageId.v1";
  const auto field = [&](std::string_view bytes) {
    for (int i = 0; i < 8; ++i) encoding.push_back(static_cast<char>(bytes.size() >> (8 * i)));
    encoding.append(bytes);
  };
  field("8988280666000002864");
  encoding.append("\x30\x39");  // MID 0x3039, network byte order
  field("\xde\xad\xbe\xef");
  field("test");
  field("Hi 1NCEOS");
  const XXH128_hash_t h = XXH3_128bits(encoding.data(), encoding.size());
  const MessageId expected{h.high64, h.low64};
  EXPECT_EQ(ExampleFields().id, expected);
}

TEST(MakeMessageId, EverySingleFieldChangesTheId) {
  const MessageId base = Id("8988280666000002864", 12345, "\xde\xad", "test", "Hi 1NCEOS");
  EXPECT_NE(base, Id("8988280666000002865", 12345, "\xde\xad", "test", "Hi 1NCEOS"));
  EXPECT_NE(base, Id("8988280666000002864", 12346, "\xde\xad", "test", "Hi 1NCEOS"));
  EXPECT_NE(base, Id("8988280666000002864", 12345 ^ 0x100, "\xde\xad", "test", "Hi 1NCEOS"));
  EXPECT_NE(base, Id("8988280666000002864", 12345, "\xde\xae", "test", "Hi 1NCEOS"));
  EXPECT_NE(base, Id("8988280666000002864", 12345, "", "test", "Hi 1NCEOS"));
  EXPECT_NE(base, Id("8988280666000002864", 12345, "\xde\xad", "tesT", "Hi 1NCEOS"));
  EXPECT_NE(base, Id("8988280666000002864", 12345, "\xde\xad", "", "Hi 1NCEOS"));
  EXPECT_NE(base, Id("8988280666000002864", 12345, "\xde\xad", "test", "Hi 1NCEOs"));
  EXPECT_NE(base, Id("8988280666000002864", 12345, "\xde\xad", "test", ""));
  EXPECT_NE(base, Id("8988280666000002864", 12345, "\xde\xad", "test",
                     std::string_view("Hi 1NCEOS\0", 10)));
}

TEST(MakeMessageId, FieldBoundariesAreUnambiguous) {
  // The same concatenated bytes, split differently between neighbouring fields.
  EXPECT_NE(Id("89", 1, "ab", "c", "x"), Id("89", 1, "a", "bc", "x"));  // token | topic
  EXPECT_NE(Id("89", 1, "", "ab", "x"), Id("89", 1, "a", "b", "x"));
  EXPECT_NE(Id("89", 1, "", "ab", "c"), Id("89", 1, "", "a", "bc"));    // topic | payload
  EXPECT_NE(Id("89", 1, "", "", "ab"), Id("89", 1, "", "a", "b"));
  EXPECT_NE(Id("8a", 1, "", "", ""), Id("8", 1, "a", "", ""));          // iccid | mid | token
  EXPECT_NE(Id("89", 0x0102, "", "", ""), Id("89\x01", 0x02, "", "", ""));
  EXPECT_NE(Id("", 0, "", "", ""), Id("", 0, "", "", std::string_view("\0", 1)));
}

TEST(MakeMessageId, ManyDistinctRequestsNoCollision) {
  std::vector<MessageId> ids;
  for (uint32_t mid = 0; mid < 65536; ++mid) {
    ids.push_back(Id("8988280666000002864", static_cast<uint16_t>(mid), "", "t", "same"));
  }
  std::sort(ids.begin(), ids.end(), [](const MessageId& a, const MessageId& b) {
    return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo;
  });
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end());
}

TEST(ErrorEnvelope, CarriesTheErrorAndTheRawPayload) {
  const std::string payload_text = "\x01";
  EnvelopeFields f{};
  f.id = MessageId{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  f.received_ms = 1649931594333;
  f.iccid = "8988280666000000001";
  f.imsi = "901405100000001";
  f.ip = "10.0.0.1";
  f.topic = "t";
  f.payload = std::as_bytes(std::span(payload_text.data(), payload_text.size()));
  const std::string description = "Asset path:longitude, Error: can't extract [0:8] from 1 bytes";
  std::string out(MaxErrorEnvelopeSize(f, description), '\0');
  const size_t n = FormatErrorEnvelope(f, description, std::span(out.data(), out.size()));
  ASSERT_EQ(n, out.size());
  EXPECT_EQ(out,
            "{\"id\":\"01234567-89ab-cdef-fedc-ba9876543210\",\"type\":\"ERROR\",\"source\":\"COAP\","
            "\"version\":\"1.0.0\",\"received\":\"1649931594333\",\"device\":{\"iccid\":"
            "\"8988280666000000001\",\"imsi\":\"901405100000001\",\"ip\":\"10.0.0.1\"},\"error\":{"
            "\"id\":\"01234567-89ab-cdef-fedc-ba9876543210\",\"type\":\"DEVICE\",\"message\":"
            "\"Translator[UserPayloadError]\",\"description\":\"Asset path:longitude, Error: "
            "can't extract [0:8] from 1 bytes\",\"payloadExists\":true},\"payload\":{\"type\":"
            "\"STRING\",\"encoding\":\"base64\",\"value\":\"AQ==\",\"topic\":\"t\"}}");
  for (size_t size = 0; size < out.size(); ++size) {
    std::string small(size + 8, '#');
    EXPECT_EQ(FormatErrorEnvelope(f, description, std::span(small.data(), size)), 0u);
    EXPECT_EQ(small.substr(size), std::string(8, '#'));
  }
}

// ---- LOCATION ---------------------------------------------------------------------------

// Runs `format` (a formatter taking the output span) into a buffer of exactly `size` chars
// (its Max...Size, documented as exact), guarded on both sides, and into every shorter buffer,
// where it must write nothing past the end and return 0.
template <typename Format>
std::string FormatGuarded(size_t size, Format format) {
  std::vector<char> buffer(size + 2 * kGuardSize, kGuard);
  const size_t n = format(std::span<char>(buffer).subspan(kGuardSize, size));
  EXPECT_EQ(n, size) << "the Max...Size function is documented as exact";
  for (size_t i = 0; i < kGuardSize; ++i) {
    EXPECT_EQ(buffer[i], kGuard);
    EXPECT_EQ(buffer[kGuardSize + size + i], kGuard);
  }
  for (size_t short_size = 0; short_size < size; ++short_size) {
    std::vector<char> small(short_size + kGuardSize, kGuard);
    EXPECT_EQ(format(std::span<char>(small).first(short_size)), 0u);
    for (size_t i = 0; i < kGuardSize; ++i) EXPECT_EQ(small[short_size + i], kGuard);
  }
  return std::string(buffer.data() + kGuardSize, n);
}

std::string FormatLocation(const EnvelopeFields& f, std::string_view lon, std::string_view lat) {
  return FormatGuarded(MaxLocationEnvelopeSize(f, lon, lat), [&](std::span<char> out) {
    return FormatLocationEnvelope(f, lon, lat, out);
  });
}

TEST(FormatLocationEnvelope, ExactBytes) {
  EnvelopeFields f = ExampleFields();
  f.id = MakeLocationId(f.id);
  f.json_payload = R"({"longitude":6.956068,"latitude":50.934544})";  // ignored
  const std::string head = "{\"id\":\"" + IdText(f.id) +
                           R"(","type":"LOCATION","source":"COAP","version":"1.0.0",)"
                           R"("received":"1670598749915",)";
  EXPECT_EQ(FormatLocation(f, "6.956068", "50.934544"),
            head + kDevice +
                R"("location":{"source":"GPS","coordinates":["6.956068","50.934544"]}})");
  f.imsi = {};
  EXPECT_EQ(FormatLocation(f, "-0.5", "7.490929188596135e+247"),
            head + kDeviceWithoutImsi +
                R"("location":{"source":"GPS","coordinates":["-0.5","7.490929188596135e+247"]}})");
}

TEST(MakeLocationId, StableDistinctAndDocumented) {
  const MessageId telemetry = ExampleFields().id;
  const MessageId location = MakeLocationId(telemetry);
  EXPECT_NE(location, telemetry);
  EXPECT_EQ(location, MakeLocationId(telemetry));
  EXPECT_NE(location, MakeLocationId({telemetry.hi, telemetry.lo ^ 1}));
  std::string encoding = "coapgate.LocationId.v1";
  for (const uint64_t half : {telemetry.hi, telemetry.lo}) {
    for (int i = 0; i < 8; ++i) encoding.push_back(static_cast<char>(half >> (8 * i)));
  }
  const XXH128_hash_t h = XXH3_128bits(encoding.data(), encoding.size());
  EXPECT_EQ(location, (MessageId{h.high64, h.low64}));
  EXPECT_EQ(IdText(location), IdText(MakeLocationId(ExampleFields().id)));
}

// ---- LIFECYCLE --------------------------------------------------------------------------

std::string FormatLifecycle(const EnvelopeFields& f) {
  return FormatGuarded(MaxLifecycleEnvelopeSize(f), [&](std::span<char> out) {
    return FormatLifecycleEnvelope(f, out);
  });
}

TEST(FormatLifecycleEnvelope, ExactBytesOfTheReferenceShape) {
  EnvelopeFields f = ExampleFields();
  f.id = MakeLifecycleId(f.iccid);
  EXPECT_EQ(FormatLifecycle(f),
            "{\"id\":\"" + IdText(f.id) +
                "\",\"type\":\"LIFECYCLE\",\"version\":\"1.0.0\",\"received\":\"1670598749915\","
                "\"device\":{\"iccid\":\"8988280666000002864\",\"imsi\":\"901405100002864\","
                "\"ip\":\"100.91.200.24\"},\"lifecycle\":{\"type\":\"DEVICE_FIRST_TIME_REGISTERED\","
                "\"message\":\"New Device successfully registered for the first time - "
                "8988280666000002864\"}}");
  f.imsi = {};
  EXPECT_EQ(FormatLifecycle(f).find("imsi"), std::string::npos);
}

TEST(MakeLifecycleId, OneIdPerDeviceAndDocumented) {
  const MessageId id = MakeLifecycleId("8988280666000002864");
  EXPECT_EQ(id, MakeLifecycleId("8988280666000002864"));
  EXPECT_NE(id, MakeLifecycleId("8988280666000002865"));
  EXPECT_NE(id, ExampleFields().id);
  std::string encoding = "coapgate.LifecycleId.v1";
  const std::string_view iccid = "8988280666000002864";
  for (int i = 0; i < 8; ++i) encoding.push_back(static_cast<char>(uint64_t{iccid.size()} >> (8 * i)));
  encoding.append(iccid);
  const XXH128_hash_t h = XXH3_128bits(encoding.data(), encoding.size());
  EXPECT_EQ(id, (MessageId{h.high64, h.low64}));
}

}  // namespace
}  // namespace coapgate::sinks
