// Zero-copy parsing of the plaintext DTLS 1.x framing the endpoint must judge before wolfSSL
// sees a datagram: the record header (RFC 6347 §4.1) and an unfragmented ClientHello
// (RFC 6347 §4.2.2, RFC 5246 §7.4.1.2), decoded byte by byte, never by casting structs.
//
// Thread contract: pure functions over caller-owned bytes; safe from any thread.
// Lifetime: every span in a ClientHelloView points into the datagram passed to the parser and
// is valid only while those bytes are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "common/result.h"

namespace coapgate::dtls {

inline constexpr size_t kRecordHeaderSize = 13;     // type, version, epoch, seq(48), length
inline constexpr size_t kHandshakeHeaderSize = 12;  // type, length(24), seq, offset(24), frag(24)
inline constexpr size_t kRandomSize = 32;
inline constexpr size_t kMaxSessionIdSize = 32;
inline constexpr uint8_t kDtlsVersionMajor = 0xfe;  // DTLS 1.0 = fe ff, DTLS 1.2 = fe fd

enum class ContentType : uint8_t {
  kChangeCipherSpec = 20,
  kAlert = 21,
  kHandshake = 22,
  kApplicationData = 23,
};

inline constexpr uint8_t kClientHello = 1;         // HandshakeType client_hello
inline constexpr uint8_t kHelloVerifyRequest = 3;  // HandshakeType hello_verify_request

struct RecordHeader {
  ContentType type;
  uint16_t version;
  uint16_t epoch;
  uint64_t sequence;  ///< 48 bits
  uint16_t length;    ///< of the fragment after the header; fits in the datagram
};

enum class RecordErrc : uint8_t {
  kTruncated,    ///< fewer than 13 bytes, or the length runs past the datagram
  kUnknownType,  ///< content type not 20..23 (heartbeat, tls12_cid and garbage alike)
  kNotDtls,      ///< version major byte is not 0xfe
};

// The first record of a datagram. A datagram may hold several records; only the first is
// looked at, which is enough to route it (see DtlsEndpoint::OnDatagram).
[[nodiscard]] Result<RecordHeader, RecordErrc> ParseRecordHeader(
    std::span<const std::byte> datagram) noexcept;

struct ClientHelloView {
  RecordHeader record;
  uint16_t message_seq;
  uint16_t client_version;                         ///< e.g. 0xfefd for DTLS 1.2
  std::span<const std::byte> version;              ///< the 2 raw client_version bytes
  std::span<const std::byte> random;               ///< 32 bytes
  std::span<const std::byte> session_id;           ///< 0..32 bytes, without its length byte
  std::span<const std::byte> cookie;               ///< 0..255 bytes, without its length byte
  std::span<const std::byte> cipher_suites;        ///< >= 2 bytes, even, without the length
  std::span<const std::byte> compression_methods;  ///< >= 1 byte, without the length
  std::span<const std::byte> extensions;           ///< the extension list, without the length
  bool has_extensions;  ///< false: the body ended after compression_methods (allowed)
};

enum class HelloErrc : uint8_t {
  kBadRecord,           ///< ParseRecordHeader failed
  kNotHandshake,        ///< first record is not a handshake record
  kNotEpochZero,        ///< a ClientHello that starts a handshake is sent in epoch 0
  kTruncatedHandshake,  ///< handshake header or body runs past the record
  kNotClientHello,      ///< another handshake message
  kFragmented,          ///< fragment_offset != 0 or fragment_length != length: dropped
  kBadVersion,          ///< client_version major is not 0xfe
  kBadSessionId,        ///< session_id longer than 32
  kBadCipherSuites,     ///< empty, odd or truncated cipher_suites
  kBadCompression,      ///< empty or truncated compression_methods
  kBadExtensions,       ///< extensions framing does not match the bytes that follow
  kTruncatedBody,       ///< a vector's length runs past the message
};

[[nodiscard]] std::string_view ToString(HelloErrc errc) noexcept;

// Parses the ClientHello in the first record of `datagram`. Only whole (unfragmented)
// ClientHellos in epoch 0 are accepted: the stateless cookie check must see every field, and
// reassembling fragments would mean keeping state for unverified peers.
[[nodiscard]] Result<ClientHelloView, HelloErrc> ParseClientHello(
    std::span<const std::byte> datagram) noexcept;

// True if the first record of `datagram` is an epoch-0 handshake record whose first
// handshake message is a ClientHello (fragmented or not): the cheap routing test.
[[nodiscard]] bool StartsWithClientHello(std::span<const std::byte> datagram) noexcept;

}  // namespace coapgate::dtls
