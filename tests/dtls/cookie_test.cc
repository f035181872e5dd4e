// Stateless cookies (RFC 6347 §4.2.1; catalogue D01-D03): bound to the peer and the
// ClientHello, valid for one rotation, and the HelloVerifyRequest built from them.
#include "dtls/cookie.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/hmac.h>

#include <cstdint>
#include <vector>

#include "dtls/session_table.h"
#include "tests/support/bytes.h"

namespace coapgate::dtls {
namespace {

using Bytes = std::vector<std::byte>;
using test::PutBigEndian;

// A ClientHello with the given cookie, sequence numbers and random seed.
Bytes HelloBytes(const Bytes& cookie, uint8_t random_seed = 1, uint64_t record_seq = 5,
                 uint16_t message_seq = 0) {
  Bytes body;
  PutBigEndian(&body, 0xfefd, 2);
  for (int i = 0; i < 32; ++i) body.push_back(static_cast<std::byte>(random_seed + i));
  PutBigEndian(&body, 0, 1);  // session_id
  PutBigEndian(&body, cookie.size(), 1);
  body.insert(body.end(), cookie.begin(), cookie.end());
  PutBigEndian(&body, 2, 2);
  PutBigEndian(&body, 0xc0a8, 2);
  PutBigEndian(&body, 1, 1);
  PutBigEndian(&body, 0, 1);
  Bytes d;
  PutBigEndian(&d, 22, 1);
  PutBigEndian(&d, 0xfeff, 2);
  PutBigEndian(&d, 0, 2);
  PutBigEndian(&d, record_seq, 6);
  PutBigEndian(&d, 12 + body.size(), 2);
  PutBigEndian(&d, 1, 1);
  PutBigEndian(&d, body.size(), 3);
  PutBigEndian(&d, message_seq, 2);
  PutBigEndian(&d, 0, 3);
  PutBigEndian(&d, body.size(), 3);
  d.insert(d.end(), body.begin(), body.end());
  return d;
}

PeerKey Peer(const char* ip, uint16_t port, uint16_t socket = 0) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  inet_pton(AF_INET, ip, &in.sin_addr);
  PeerKey key;
  EXPECT_TRUE(MakePeerKey(reinterpret_cast<const sockaddr*>(&in), sizeof in, socket, &key));
  return key;
}

CookieSecret Secret(uint8_t fill) {
  CookieSecret s;
  s.fill(std::byte{fill});
  return s;
}

// The ClientHello a client sends back after a HVR: the first one with `cookie` in it.
Bytes Answer(const Cookie& cookie, uint8_t random_seed = 1) {
  return HelloBytes(Bytes(cookie.begin(), cookie.end()), random_seed, 6, 1);
}

class CookieTest : public ::testing::Test {
 protected:
  Cookie MintFor(const PeerKey& peer, const Bytes& hello) {
    auto h = ParseClientHello(hello);
    EXPECT_TRUE(h);
    Cookie c{};
    EXPECT_TRUE(secrets_.Mint(peer.span(), *h, &c));
    return c;
  }
  CookieVerdict CheckFrom(const PeerKey& peer, const Bytes& hello) {
    auto h = ParseClientHello(hello);
    EXPECT_TRUE(h);
    return secrets_.Check(peer.span(), *h);
  }

  CookieSecrets secrets_{Secret(1), 60000, 0};
  const PeerKey peer_ = Peer("10.0.0.1", 40000);
};

TEST_F(CookieTest, MissingCookie) {
  EXPECT_EQ(CheckFrom(peer_, HelloBytes({})), CookieVerdict::kMissing);
}

TEST_F(CookieTest, ValidCookieFromTheSamePeer) {
  const Cookie c = MintFor(peer_, HelloBytes({}));
  EXPECT_EQ(CheckFrom(peer_, Answer(c)), CookieVerdict::kCurrent);
}

TEST_F(CookieTest, WrongPeerAddressPortOrSocket) {
  const Cookie c = MintFor(peer_, HelloBytes({}));
  EXPECT_EQ(CheckFrom(Peer("10.0.0.2", 40000), Answer(c)), CookieVerdict::kInvalid);
  EXPECT_EQ(CheckFrom(Peer("10.0.0.1", 40001), Answer(c)), CookieVerdict::kInvalid);
  EXPECT_EQ(CheckFrom(Peer("10.0.0.1", 40000, 1), Answer(c)), CookieVerdict::kInvalid);
}

TEST_F(CookieTest, BoundToTheClientHelloFields) {
  const Cookie c = MintFor(peer_, HelloBytes({}));
  EXPECT_EQ(CheckFrom(peer_, Answer(c, /*random_seed=*/2)), CookieVerdict::kInvalid);
  Cookie flipped = c;
  flipped[5] ^= std::byte{1};
  EXPECT_EQ(CheckFrom(peer_, Answer(flipped)), CookieVerdict::kInvalid);
  // Truncated cookie.
  EXPECT_EQ(CheckFrom(peer_, HelloBytes(Bytes(c.begin(), c.begin() + 16))),
            CookieVerdict::kInvalid);
}

TEST_F(CookieTest, ValidAfterOneRotationNotAfterTwo) {
  const Cookie c = MintFor(peer_, HelloBytes({}));
  EXPECT_FALSE(secrets_.MaybeRotate(59999));
  EXPECT_TRUE(secrets_.MaybeRotate(60000));
  EXPECT_EQ(CheckFrom(peer_, Answer(c)), CookieVerdict::kPrevious);
  EXPECT_EQ(secrets_.next_rotation_ms(), 120000u);
  EXPECT_TRUE(secrets_.MaybeRotate(120000));
  EXPECT_EQ(CheckFrom(peer_, Answer(c)), CookieVerdict::kInvalid);
  // A cookie minted now is current again.
  const Cookie fresh = MintFor(peer_, HelloBytes({}));
  EXPECT_NE(fresh, c);
  EXPECT_EQ(CheckFrom(peer_, Answer(fresh)), CookieVerdict::kCurrent);
}

// The layout contract with wolfSSL (CreateDtlsCookie in src/dtls.c): one HMAC-SHA256 over
// peer || version || random || session_id || suites || compression, no length prefixes.
TEST(ComputeCookie, IsHmacSha256OverWolfsslsFieldOrder) {
  const Bytes hello = HelloBytes({});
  auto h = ParseClientHello(hello);
  ASSERT_TRUE(h);
  const PeerKey peer = Peer("192.0.2.7", 5684);
  Bytes message(peer.bytes.begin(), peer.bytes.end());
  for (auto part :
       {h->version, h->random, h->session_id, h->cipher_suites, h->compression_methods}) {
    message.insert(message.end(), part.begin(), part.end());
  }
  const CookieSecret secret = Secret(7);
  Hmac hmac;
  ASSERT_EQ(wc_HmacInit(&hmac, nullptr, INVALID_DEVID), 0);
  ASSERT_EQ(wc_HmacSetKey(&hmac, WC_SHA256, reinterpret_cast<const byte*>(secret.data()), 32), 0);
  ASSERT_EQ(wc_HmacUpdate(&hmac, reinterpret_cast<const byte*>(message.data()),
                          static_cast<word32>(message.size())),
            0);
  Cookie expected;
  ASSERT_EQ(wc_HmacFinal(&hmac, reinterpret_cast<byte*>(expected.data())), 0);
  wc_HmacFree(&hmac);
  Cookie got;
  ASSERT_TRUE(ComputeCookie(secret, peer.span(), *h, &got));
  EXPECT_EQ(got, expected);
}

TEST(RandomSecret, DiffersEachTime) {
  CookieSecret a, b;
  ASSERT_TRUE(RandomSecret(&a));
  ASSERT_TRUE(RandomSecret(&b));
  EXPECT_NE(a, b);
}

TEST(BuildHelloVerifyRequest, StatelessAnswerToTheClientHello) {
  const Bytes hello_bytes = HelloBytes({}, 1, /*record_seq=*/0x010203040506, /*message_seq=*/0);
  auto hello = ParseClientHello(hello_bytes);
  ASSERT_TRUE(hello);
  Cookie cookie;
  for (size_t i = 0; i < cookie.size(); ++i) cookie[i] = static_cast<std::byte>(0xa0 + i);
  std::array<std::byte, 100> out;
  auto n = BuildHelloVerifyRequest(*hello, cookie, out);
  ASSERT_TRUE(n);
  ASSERT_EQ(*n, kHelloVerifyRequestSize);
  EXPECT_EQ(*n, 60u);
  EXPECT_LT(*n, hello_bytes.size());  // no amplification (D01)
  const std::span<const std::byte> d(out.data(), *n);
  auto record = ParseRecordHeader(d);
  ASSERT_TRUE(record);
  EXPECT_EQ(record->type, ContentType::kHandshake);
  EXPECT_EQ(record->version, 0xfefd);
  EXPECT_EQ(record->epoch, 0);
  EXPECT_EQ(record->sequence, 0x010203040506u);  // the ClientHello's (RFC 6347 §4.2.1)
  EXPECT_EQ(record->length, 47);
  EXPECT_EQ(d[13], std::byte{3});   // hello_verify_request
  EXPECT_EQ(d[16], std::byte{35});  // length 35
  EXPECT_EQ(d[17], std::byte{0});   // message_seq 0
  EXPECT_EQ(d[18], std::byte{0});
  EXPECT_EQ(d[24], std::byte{35});    // fragment_length
  EXPECT_EQ(d[25], std::byte{0xfe});  // server_version DTLS 1.0
  EXPECT_EQ(d[26], std::byte{0xff});
  EXPECT_EQ(d[27], std::byte{32});  // cookie length
  EXPECT_EQ(d[28], std::byte{0xa0});
  EXPECT_EQ(d[59], std::byte{0xa0 + 31});
}

TEST(BuildHelloVerifyRequest, EchoesMessageSeqAndRejectsSmallBuffers) {
  const Bytes hello_bytes = HelloBytes({}, 1, 9, /*message_seq=*/3);
  auto hello = ParseClientHello(hello_bytes);
  ASSERT_TRUE(hello);
  Cookie cookie{};
  std::array<std::byte, 60> out;
  ASSERT_TRUE(BuildHelloVerifyRequest(*hello, cookie, out));
  EXPECT_EQ(out[18], std::byte{3});
  std::array<std::byte, 59> small;
  EXPECT_EQ(BuildHelloVerifyRequest(*hello, cookie, small).error(), HvrErrc::kBufferTooSmall);
}

}  // namespace
}  // namespace coapgate::dtls
