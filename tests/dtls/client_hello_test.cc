// The DTLS record header and ClientHello parser: RFC 6347 §4.1/§4.2.2 framing, RFC 5246
// §7.4.1.2 optional extensions, and the drop rules of reliability-and-ecosystem.md §3.3
// (D06: fragmented ClientHellos are dropped).
#include "dtls/client_hello.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "tests/support/bytes.h"

namespace coapgate::dtls {
namespace {

using Bytes = std::vector<std::byte>;
using test::PutBigEndian;

void PutVector(Bytes* out, const std::vector<uint8_t>& v, size_t width) {
  PutBigEndian(out, v.size(), width);
  for (uint8_t b : v) out->push_back(static_cast<std::byte>(b));
}

// A ClientHello built field by field, like a client would send it.
struct Hello {
  uint8_t content_type = 22;
  uint16_t record_version = 0xfeff;
  uint16_t epoch = 0;
  uint64_t sequence = 7;
  uint8_t msg_type = 1;
  uint16_t message_seq = 0;
  std::optional<uint32_t> fragment_offset{};  // default 0
  std::optional<uint32_t> fragment_length{};  // default = length
  uint16_t client_version = 0xfefd;
  std::vector<uint8_t> session_id{};
  std::vector<uint8_t> cookie{};
  std::vector<uint8_t> suites = {0xc0, 0xa8, 0x00, 0xae};
  std::vector<uint8_t> compression = {0};
  std::optional<std::vector<uint8_t>> extensions{};  // the list; nullopt = no block at all

  Bytes Body() const {
    Bytes body;
    PutBigEndian(&body, client_version, 2);
    for (int i = 0; i < 32; ++i) body.push_back(static_cast<std::byte>(i));
    PutVector(&body, session_id, 1);
    PutVector(&body, cookie, 1);
    PutVector(&body, suites, 2);
    PutVector(&body, compression, 1);
    if (extensions) PutVector(&body, *extensions, 2);
    return body;
  }
  Bytes Build() const { return Wrap(Body()); }
  Bytes Wrap(const Bytes& body) const {
    Bytes handshake;
    PutBigEndian(&handshake, msg_type, 1);
    PutBigEndian(&handshake, body.size(), 3);
    PutBigEndian(&handshake, message_seq, 2);
    PutBigEndian(&handshake, fragment_offset.value_or(0), 3);
    PutBigEndian(&handshake, fragment_length.value_or(static_cast<uint32_t>(body.size())), 3);
    handshake.insert(handshake.end(), body.begin(), body.end());
    Bytes record;
    PutBigEndian(&record, content_type, 1);
    PutBigEndian(&record, record_version, 2);
    PutBigEndian(&record, epoch, 2);
    PutBigEndian(&record, sequence, 6);
    PutBigEndian(&record, handshake.size(), 2);
    record.insert(record.end(), handshake.begin(), handshake.end());
    return record;
  }
};

// extended_master_secret (0x0017, empty) and encrypt_then_mac (0x0016, empty).
const std::vector<uint8_t> kTwoExtensions = {0x00, 0x17, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00};

HelloErrc ErrorOf(const Bytes& d) {
  auto h = ParseClientHello(d);
  EXPECT_FALSE(h.has_value());
  return h ? HelloErrc::kBadRecord : h.error();
}

TEST(ParseRecordHeader, ReadsEveryField) {
  const Bytes d = Hello{.epoch = 0x0102, .sequence = 0x0a0b0c0d0e0f}.Build();
  auto r = ParseRecordHeader(d);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->type, ContentType::kHandshake);
  EXPECT_EQ(r->version, 0xfeff);
  EXPECT_EQ(r->epoch, 0x0102);
  EXPECT_EQ(r->sequence, 0x0a0b0c0d0e0fu);
  EXPECT_EQ(r->length, d.size() - kRecordHeaderSize);
}

TEST(ParseRecordHeader, RejectsGarbage) {
  Bytes d = Hello{}.Build();
  EXPECT_EQ(ParseRecordHeader(std::span(d).first(12)).error(), RecordErrc::kTruncated);
  EXPECT_EQ(ParseRecordHeader(std::span(d).first(d.size() - 1)).error(), RecordErrc::kTruncated);
  d[0] = std::byte{24};  // heartbeat
  EXPECT_EQ(ParseRecordHeader(d).error(), RecordErrc::kUnknownType);
  d[0] = std::byte{22};
  d[1] = std::byte{0x03};  // TLS 1.2 (03 03), not DTLS
  d[2] = std::byte{0x03};
  EXPECT_EQ(ParseRecordHeader(d).error(), RecordErrc::kNotDtls);
}

TEST(ParseClientHello, ValidWithExtensions) {
  Hello spec{.message_seq = 1,
             .session_id = {9, 9},
             .cookie = std::vector<uint8_t>(32, 0xcc),
             .extensions = kTwoExtensions};
  const Bytes d = spec.Build();
  auto h = ParseClientHello(d);
  ASSERT_TRUE(h) << ToString(h.error());
  EXPECT_EQ(h->record.sequence, 7u);
  EXPECT_EQ(h->message_seq, 1);
  EXPECT_EQ(h->client_version, 0xfefd);
  ASSERT_EQ(h->random.size(), 32u);
  EXPECT_EQ(h->random[31], std::byte{31});
  EXPECT_EQ(h->session_id.size(), 2u);
  EXPECT_EQ(h->cookie.size(), 32u);
  EXPECT_EQ(h->cipher_suites.size(), 4u);
  EXPECT_EQ(h->compression_methods.size(), 1u);
  EXPECT_TRUE(h->has_extensions);
  EXPECT_EQ(h->extensions.size(), kTwoExtensions.size());
  // Views point into the datagram.
  EXPECT_EQ(h->version.data(), d.data() + kRecordHeaderSize + kHandshakeHeaderSize);
  EXPECT_EQ(h->random.data(), h->version.data() + 2);
}

TEST(ParseClientHello, AcceptsNoExtensionsBlock) {  // node-dtls-client; RFC 5246 §7.4.1.2
  const Bytes d = Hello{}.Build();
  auto h = ParseClientHello(d);
  ASSERT_TRUE(h) << ToString(h.error());
  EXPECT_FALSE(h->has_extensions);
  EXPECT_TRUE(h->extensions.empty());
  EXPECT_TRUE(h->cookie.empty());
}

TEST(ParseClientHello, AcceptsEmptyExtensionsBlock) {
  auto h = ParseClientHello(Hello{.extensions = std::vector<uint8_t>{}}.Build());
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->has_extensions);
  EXPECT_TRUE(h->extensions.empty());
}

TEST(ParseClientHello, RejectsEveryTruncatedPrefix) {
  const Bytes d =
      Hello{.cookie = std::vector<uint8_t>(32, 1), .extensions = kTwoExtensions}.Build();
  ASSERT_TRUE(ParseClientHello(d));
  for (size_t n = 0; n < d.size(); ++n) {
    EXPECT_FALSE(ParseClientHello(std::span(d).first(n))) << n;
  }
}

TEST(ParseClientHello, RejectsEveryTruncatedBodyWithConsistentHeaders) {
  // The headers claim exactly the bytes present: only the vectors inside can be short.
  const Hello spec{
      .session_id = {1, 2, 3}, .cookie = std::vector<uint8_t>(32, 1), .extensions = kTwoExtensions};
  const Bytes full = spec.Body();
  const size_t without_extensions = full.size() - 2 - kTwoExtensions.size();
  for (size_t n = 0; n < full.size(); ++n) {
    const Bytes d = spec.Wrap(Bytes(full.begin(), full.begin() + static_cast<ptrdiff_t>(n)));
    auto h = ParseClientHello(d);
    if (n == without_extensions) {  // cut exactly before the extensions: a valid hello
      ASSERT_TRUE(h) << n;
      EXPECT_FALSE(h->has_extensions);
    } else {
      EXPECT_FALSE(h) << n;
    }
  }
}

TEST(ParseClientHello, DropsFragments) {  // D06
  EXPECT_EQ(ErrorOf(Hello{.fragment_offset = 10}.Build()), HelloErrc::kFragmented);
  EXPECT_EQ(ErrorOf(Hello{.fragment_length = 20}.Build()), HelloErrc::kFragmented);
  // A first fragment: offset 0, carrying fewer bytes than the message length.
  Hello first;
  Bytes body = first.Body();
  const auto length = static_cast<uint32_t>(body.size());
  body.resize(30);
  first.fragment_length = 30;
  Bytes d = first.Wrap(body);
  d[kRecordHeaderSize + 1] = std::byte{0};  // restore the full message length (24 bits)
  d[kRecordHeaderSize + 2] = static_cast<std::byte>(length >> 8);
  d[kRecordHeaderSize + 3] = static_cast<std::byte>(length & 0xff);
  EXPECT_EQ(ErrorOf(d), HelloErrc::kFragmented);
}

TEST(ParseClientHello, RejectsOtherRecordsAndMessages) {
  EXPECT_EQ(ErrorOf(Hello{.content_type = 23}.Build()), HelloErrc::kNotHandshake);
  EXPECT_EQ(ErrorOf(Hello{.epoch = 1}.Build()), HelloErrc::kNotEpochZero);
  EXPECT_EQ(ErrorOf(Hello{.msg_type = 2}.Build()), HelloErrc::kNotClientHello);
  EXPECT_EQ(ErrorOf(Hello{.record_version = 0x0303}.Build()), HelloErrc::kBadRecord);
  EXPECT_EQ(ErrorOf(Hello{.client_version = 0x0303}.Build()), HelloErrc::kBadVersion);
}

TEST(ParseClientHello, RejectsBadVectors) {
  EXPECT_EQ(ErrorOf(Hello{.session_id = std::vector<uint8_t>(33, 0)}.Build()),
            HelloErrc::kBadSessionId);
  EXPECT_EQ(ErrorOf(Hello{.suites = {}}.Build()), HelloErrc::kBadCipherSuites);
  EXPECT_EQ(ErrorOf(Hello{.suites = {0xc0, 0xa8, 0x00}}.Build()), HelloErrc::kBadCipherSuites);
  EXPECT_EQ(ErrorOf(Hello{.compression = {}}.Build()), HelloErrc::kBadCompression);
  // An extension whose length runs past the list.
  EXPECT_EQ(
      ErrorOf(Hello{.extensions = std::vector<uint8_t>{0x00, 0x17, 0x00, 0x05, 0x00}}.Build()),
      HelloErrc::kBadExtensions);
  // Bytes after the extension block.
  Hello trailing{.extensions = kTwoExtensions};
  Bytes body = trailing.Body();
  body.push_back(std::byte{0});
  EXPECT_EQ(ErrorOf(trailing.Wrap(body)), HelloErrc::kBadExtensions);
}

TEST(ParseClientHello, AcceptsMaximalVectors) {
  auto h = ParseClientHello(
      Hello{.session_id = std::vector<uint8_t>(32, 1), .cookie = std::vector<uint8_t>(255, 2)}
          .Build());
  ASSERT_TRUE(h);
  EXPECT_EQ(h->session_id.size(), 32u);
  EXPECT_EQ(h->cookie.size(), 255u);
}

TEST(ParseClientHello, IgnoresRecordsAfterTheFirst) {
  Bytes d = Hello{}.Build();
  const Bytes second = Hello{.content_type = 23}.Build();
  d.insert(d.end(), second.begin(), second.end());
  EXPECT_TRUE(ParseClientHello(d));
}

TEST(StartsWithClientHello, RoutesByFirstByte) {
  EXPECT_TRUE(StartsWithClientHello(Hello{}.Build()));
  EXPECT_TRUE(StartsWithClientHello(Hello{.fragment_offset = 5}.Build()));  // then dropped
  EXPECT_FALSE(StartsWithClientHello(Hello{.epoch = 1}.Build()));
  EXPECT_FALSE(StartsWithClientHello(Hello{.msg_type = 16}.Build()));
  EXPECT_FALSE(StartsWithClientHello(Hello{.content_type = 23}.Build()));
  EXPECT_FALSE(StartsWithClientHello(Bytes(5, std::byte{22})));
}

// Random bytes and random mutations of a valid hello never crash or over-read (ASan) and
// every accepted view lies inside the input.
TEST(ParseClientHello, SpinRandomInputs) {
  std::mt19937_64 rng(42);
  const Bytes valid =
      Hello{.cookie = std::vector<uint8_t>(32, 1), .extensions = kTwoExtensions}.Build();
  for (int i = 0; i < 200000; ++i) {
    Bytes d;
    if (i % 2 == 0) {
      d.resize(rng() % 200);
      for (auto& b : d) b = static_cast<std::byte>(rng());
      if (!d.empty()) d[0] = std::byte{22};
    } else {
      d = valid;
      for (int k = 0; k < 3; ++k) d[rng() % d.size()] = static_cast<std::byte>(rng());
      d.resize(rng() % (d.size() + 1));
    }
    auto h = ParseClientHello(d);
    if (h) {
      const std::byte* end = d.data() + d.size();
      for (auto s : {h->random, h->session_id, h->cookie, h->cipher_suites, h->compression_methods,
                     h->extensions}) {
        ASSERT_TRUE(s.empty() || (s.data() >= d.data() && s.data() + s.size() <= end));
      }
    }
  }
}

}  // namespace
}  // namespace coapgate::dtls
