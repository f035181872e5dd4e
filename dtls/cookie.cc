#include "dtls/cookie.h"

#include <sys/random.h>
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/hmac.h>

#include <cerrno>
#include <cstring>

namespace coapgate::dtls {

namespace {

const byte* Bytes(std::span<const std::byte> s) noexcept {
  return reinterpret_cast<const byte*>(s.data());
}

bool Update(Hmac* hmac, std::span<const std::byte> s) noexcept {
  return wc_HmacUpdate(hmac, Bytes(s), static_cast<word32>(s.size())) == 0;
}

bool EqualConstantTime(std::span<const std::byte> a, const Cookie& b) noexcept {
  if (a.size() != b.size()) return false;
  uint8_t diff = 0;
  for (size_t i = 0; i < b.size(); ++i) diff |= static_cast<uint8_t>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

bool ComputeCookie(const CookieSecret& secret, std::span<const std::byte> peer,
                   const ClientHelloView& hello, Cookie* out) noexcept {
  Hmac hmac;
  if (wc_HmacInit(&hmac, nullptr, INVALID_DEVID) != 0) return false;
  // The order below is wolfSSL's (see the header): changing it costs every handshake a
  // second HelloVerifyRequest round trip.
  const bool ok =
      wc_HmacSetKey(&hmac, WC_SHA256, Bytes(secret), static_cast<word32>(secret.size())) == 0 &&
      Update(&hmac, peer) && Update(&hmac, hello.version) && Update(&hmac, hello.random) &&
      Update(&hmac, hello.session_id) && Update(&hmac, hello.cipher_suites) &&
      Update(&hmac, hello.compression_methods) &&
      wc_HmacFinal(&hmac, reinterpret_cast<byte*>(out->data())) == 0;
  wc_HmacFree(&hmac);
  return ok;
}

bool RandomSecret(CookieSecret* out) noexcept {
  size_t filled = 0;
  while (filled < out->size()) {
    const ssize_t n = getrandom(out->data() + filled, out->size() - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    filled += static_cast<size_t>(n);
  }
  return true;
}

CookieSecrets::CookieSecrets(const CookieSecret& initial, uint64_t rotation_ms,
                             uint64_t now_ms) noexcept
    : current_(initial), rotation_ms_(rotation_ms), next_rotation_ms_(now_ms + rotation_ms) {}

bool CookieSecrets::MaybeRotate(uint64_t now_ms) noexcept {
  if (now_ms < next_rotation_ms_) return false;
  CookieSecret next;
  if (!RandomSecret(&next)) {
    // No CSPRNG right now (it does not fail on Linux once booted): derive the next secret
    // from the current one, which no peer has seen, rather than keep a secret forever.
    Cookie derived{};
    ClientHelloView none{};
    const uint64_t stamp = now_ms;
    if (!ComputeCookie(current_, std::as_bytes(std::span(&stamp, 1)), none, &derived)) {
      return false;
    }
    std::memcpy(next.data(), derived.data(), next.size());
  }
  Rotate(next, now_ms);
  return true;
}

void CookieSecrets::Rotate(const CookieSecret& next, uint64_t now_ms) noexcept {
  previous_ = current_;
  has_previous_ = true;
  current_ = next;
  next_rotation_ms_ = now_ms + rotation_ms_;
}

bool CookieSecrets::Mint(std::span<const std::byte> peer, const ClientHelloView& hello,
                         Cookie* out) const noexcept {
  return ComputeCookie(current_, peer, hello, out);
}

CookieVerdict CookieSecrets::Check(std::span<const std::byte> peer,
                                   const ClientHelloView& hello) const noexcept {
  if (hello.cookie.empty()) return CookieVerdict::kMissing;
  if (hello.cookie.size() != kCookieSize) return CookieVerdict::kInvalid;
  Cookie expected;
  if (ComputeCookie(current_, peer, hello, &expected) &&
      EqualConstantTime(hello.cookie, expected)) {
    return CookieVerdict::kCurrent;
  }
  if (has_previous_ && ComputeCookie(previous_, peer, hello, &expected) &&
      EqualConstantTime(hello.cookie, expected)) {
    return CookieVerdict::kPrevious;
  }
  return CookieVerdict::kInvalid;
}

Result<size_t, HvrErrc> BuildHelloVerifyRequest(const ClientHelloView& hello,
                                                std::span<const std::byte> cookie,
                                                std::span<std::byte> out) noexcept {
  if (cookie.size() > 255) return Fail(HvrErrc::kBadCookie);
  const size_t body = 2 + 1 + cookie.size();
  const size_t fragment = kHandshakeHeaderSize + body;
  const size_t total = kRecordHeaderSize + fragment;
  if (out.size() < total) return Fail(HvrErrc::kBufferTooSmall);

  size_t i = 0;
  auto put = [&](uint64_t v, size_t width) {
    for (size_t k = width; k-- > 0;) out[i++] = static_cast<std::byte>((v >> (8 * k)) & 0xff);
  };
  // Record header: handshake, DTLS 1.2, epoch 0, the ClientHello's sequence number.
  put(static_cast<uint8_t>(ContentType::kHandshake), 1);
  put(0xfefd, 2);
  put(0, 2);
  put(hello.record.sequence, 6);
  put(fragment, 2);
  // Handshake header: one unfragmented hello_verify_request with the ClientHello's seq.
  put(kHelloVerifyRequest, 1);
  put(body, 3);
  put(hello.message_seq, 2);
  put(0, 3);
  put(body, 3);
  // HelloVerifyRequest: server_version DTLS 1.0 (RFC 6347 §4.2.1), cookie.
  put(0xfeff, 2);
  put(cookie.size(), 1);
  std::memcpy(out.data() + i, cookie.data(), cookie.size());
  return total;
}

}  // namespace coapgate::dtls
