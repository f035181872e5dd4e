// Stateless DTLS cookies (RFC 6347 §4.2.1): the HelloVerifyRequest exchange that proves a
// peer can receive at its source address before the endpoint keeps any state for it.
//
// cookie = HMAC-SHA256(secret, peer || client_version || random || session_id ||
//                              cipher_suites || compression_methods)
// where `peer` is the caller's canonical encoding of the source address (PeerKey bytes, see
// session_table.h) and the ClientHello fields are taken without their length prefixes. That
// layout is exactly the one wolfSSL 5.5.4 computes in its own stateless check
// (CreateDtlsCookie, src/dtls.c): a WOLFSSL given the same secret and peer bytes accepts the
// ClientHello that carries our cookie instead of asking for a second round trip
// (dtls_endpoint.cc relies on this; its tests catch a mismatch).
//
// The secret rotates every `rotation` and the previous one stays valid, so a cookie is good
// for between one and two rotation periods (Californium: 60 s, previous kept).
//
// Thread contract: a CookieSecrets belongs to one shard; the free functions are pure.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "common/result.h"
#include "dtls/client_hello.h"

namespace coapgate::dtls {

inline constexpr size_t kCookieSize = 32;  // HMAC-SHA256; also wolfSSL's DTLS_COOKIE_SZ
inline constexpr size_t kCookieSecretSize = 32;
// Record header + handshake header + server_version(2) + cookie<1>: 60 bytes, smaller than
// any ClientHello that can ask for it (>= 67 bytes), so no amplification (D01).
inline constexpr size_t kHelloVerifyRequestSize =
    kRecordHeaderSize + kHandshakeHeaderSize + 2 + 1 + kCookieSize;

using Cookie = std::array<std::byte, kCookieSize>;
using CookieSecret = std::array<std::byte, kCookieSecretSize>;

// Fails only if wolfCrypt's HMAC does (it cannot with these sizes); callers drop the datagram.
[[nodiscard]] bool ComputeCookie(const CookieSecret& secret, std::span<const std::byte> peer,
                                 const ClientHelloView& hello, Cookie* out) noexcept;

// Fills `out` from the kernel CSPRNG (getrandom). False if it is unavailable.
[[nodiscard]] bool RandomSecret(CookieSecret* out) noexcept;

enum class CookieVerdict : uint8_t {
  kMissing,   ///< empty cookie: the first ClientHello of a handshake; answer with a HVR
  kCurrent,   ///< made with the current secret
  kPrevious,  ///< made with the previous secret (at most one rotation old)
  kInvalid,   ///< anything else: forged, wrong peer, or two rotations old; answer with a HVR
};

class CookieSecrets {
 public:
  // REQUIRES: rotation_ms > 0.
  CookieSecrets(const CookieSecret& initial, uint64_t rotation_ms, uint64_t now_ms) noexcept;

  // Rotates if `now_ms` reached the rotation time (to a fresh random secret), and returns
  // whether it did. Cheap when it does not: one comparison.
  bool MaybeRotate(uint64_t now_ms) noexcept;
  // Rotates now to `next` (tests, and the fallback when the CSPRNG fails).
  void Rotate(const CookieSecret& next, uint64_t now_ms) noexcept;

  [[nodiscard]] bool Mint(std::span<const std::byte> peer, const ClientHelloView& hello,
                          Cookie* out) const noexcept;
  // Constant-time comparison against the current, then the previous secret's cookie.
  [[nodiscard]] CookieVerdict Check(std::span<const std::byte> peer,
                                    const ClientHelloView& hello) const noexcept;

  [[nodiscard]] const CookieSecret& current() const noexcept { return current_; }
  // REQUIRES: a rotation happened (otherwise kPrevious is never returned).
  [[nodiscard]] const CookieSecret& previous() const noexcept { return previous_; }
  [[nodiscard]] uint64_t next_rotation_ms() const noexcept { return next_rotation_ms_; }

 private:
  CookieSecret current_;
  CookieSecret previous_{};
  bool has_previous_ = false;
  uint64_t rotation_ms_;
  uint64_t next_rotation_ms_;
};

enum class HvrErrc : uint8_t {
  kBufferTooSmall,  ///< `out` holds fewer than kHelloVerifyRequestSize bytes
  kBadCookie,       ///< cookie longer than 255 bytes
};

// Writes the HelloVerifyRequest datagram answering `hello` into `out` and returns its size.
// Stateless by construction (RFC 6347 §4.2.1): record sequence number and message_seq are
// copied from the ClientHello; server_version is DTLS 1.0 (fe ff) as the RFC recommends for
// any negotiated version; the record carries DTLS 1.2 (fe fd), like wolfSSL's own HVR.
[[nodiscard]] Result<size_t, HvrErrc> BuildHelloVerifyRequest(const ClientHelloView& hello,
                                                              std::span<const std::byte> cookie,
                                                              std::span<std::byte> out) noexcept;

}  // namespace coapgate::dtls
