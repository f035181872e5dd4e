#include "dtls/client_hello.h"

namespace coapgate::dtls {

namespace {

// A bounds-checked cursor over one message. Every read checks the remaining length first;
// a failed read leaves the cursor unusable (ok() false) and yields zeros / empty spans.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> bytes) noexcept : bytes_(bytes) {}

  [[nodiscard]] bool ok() const noexcept { return ok_; }
  [[nodiscard]] size_t remaining() const noexcept { return bytes_.size() - pos_; }

  uint32_t Uint(size_t width) noexcept {  // big-endian, width 1..4
    if (!Need(width)) return 0;
    uint32_t v = 0;
    for (size_t i = 0; i < width; ++i) v = (v << 8) | static_cast<uint8_t>(bytes_[pos_ + i]);
    pos_ += width;
    return v;
  }
  std::span<const std::byte> Bytes(size_t n) noexcept {
    if (!Need(n)) return {};
    auto s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  // A vector with a `width`-byte length prefix (RFC 5246 §4.3).
  std::span<const std::byte> Vector(size_t width) noexcept { return Bytes(Uint(width)); }

 private:
  bool Need(size_t n) noexcept {
    if (!ok_ || remaining() < n) ok_ = false;
    return ok_;
  }

  std::span<const std::byte> bytes_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Walks the extension list: type(2), length(2), data; each must fit, and together they must
// fill the list exactly.
bool ExtensionsWellFramed(std::span<const std::byte> list) noexcept {
  Reader r(list);
  while (r.ok() && r.remaining() > 0) {
    r.Uint(2);
    r.Vector(2);
  }
  return r.ok();
}

}  // namespace

std::string_view ToString(HelloErrc errc) noexcept {
  switch (errc) {
    case HelloErrc::kBadRecord:
      return "bad_record";
    case HelloErrc::kNotHandshake:
      return "not_handshake";
    case HelloErrc::kNotEpochZero:
      return "not_epoch_zero";
    case HelloErrc::kTruncatedHandshake:
      return "truncated_handshake";
    case HelloErrc::kNotClientHello:
      return "not_client_hello";
    case HelloErrc::kFragmented:
      return "fragmented";
    case HelloErrc::kBadVersion:
      return "bad_version";
    case HelloErrc::kBadSessionId:
      return "bad_session_id";
    case HelloErrc::kBadCipherSuites:
      return "bad_cipher_suites";
    case HelloErrc::kBadCompression:
      return "bad_compression";
    case HelloErrc::kBadExtensions:
      return "bad_extensions";
    case HelloErrc::kTruncatedBody:
      return "truncated_body";
  }
  return "unknown";
}

Result<RecordHeader, RecordErrc> ParseRecordHeader(std::span<const std::byte> datagram) noexcept {
  if (datagram.size() < kRecordHeaderSize) return Fail(RecordErrc::kTruncated);
  Reader r(datagram);
  RecordHeader h{};
  const uint32_t type = r.Uint(1);
  if (type < 20 || type > 23) return Fail(RecordErrc::kUnknownType);
  h.type = static_cast<ContentType>(type);
  h.version = static_cast<uint16_t>(r.Uint(2));
  if ((h.version >> 8) != kDtlsVersionMajor) return Fail(RecordErrc::kNotDtls);
  h.epoch = static_cast<uint16_t>(r.Uint(2));
  h.sequence = (static_cast<uint64_t>(r.Uint(2)) << 32) | r.Uint(4);
  h.length = static_cast<uint16_t>(r.Uint(2));
  if (r.remaining() < h.length) return Fail(RecordErrc::kTruncated);
  return h;
}

bool StartsWithClientHello(std::span<const std::byte> datagram) noexcept {
  auto record = ParseRecordHeader(datagram);
  return record && record->type == ContentType::kHandshake && record->epoch == 0 &&
         record->length >= 1 && static_cast<uint8_t>(datagram[kRecordHeaderSize]) == kClientHello;
}

Result<ClientHelloView, HelloErrc> ParseClientHello(std::span<const std::byte> datagram) noexcept {
  auto record = ParseRecordHeader(datagram);
  if (!record) return Fail(HelloErrc::kBadRecord);
  if (record->type != ContentType::kHandshake) return Fail(HelloErrc::kNotHandshake);
  if (record->epoch != 0) return Fail(HelloErrc::kNotEpochZero);

  ClientHelloView v{};
  v.record = *record;
  Reader fragment(datagram.subspan(kRecordHeaderSize, record->length));
  const uint32_t msg_type = fragment.Uint(1);
  const uint32_t length = fragment.Uint(3);
  v.message_seq = static_cast<uint16_t>(fragment.Uint(2));
  const uint32_t fragment_offset = fragment.Uint(3);
  const uint32_t fragment_length = fragment.Uint(3);
  if (!fragment.ok()) return Fail(HelloErrc::kTruncatedHandshake);
  if (msg_type != kClientHello) return Fail(HelloErrc::kNotClientHello);
  if (fragment_offset != 0 || fragment_length != length) return Fail(HelloErrc::kFragmented);
  if (fragment.remaining() < length) return Fail(HelloErrc::kTruncatedHandshake);

  Reader body(fragment.Bytes(length));
  v.version = body.Bytes(2);
  v.random = body.Bytes(kRandomSize);
  if (!body.ok()) return Fail(HelloErrc::kTruncatedBody);
  v.client_version = static_cast<uint16_t>((static_cast<uint8_t>(v.version[0]) << 8) |
                                           static_cast<uint8_t>(v.version[1]));
  if ((v.client_version >> 8) != kDtlsVersionMajor) return Fail(HelloErrc::kBadVersion);

  v.session_id = body.Vector(1);
  if (!body.ok()) return Fail(HelloErrc::kTruncatedBody);
  if (v.session_id.size() > kMaxSessionIdSize) return Fail(HelloErrc::kBadSessionId);
  v.cookie = body.Vector(1);  // a 1-byte length: at most 255 by construction
  v.cipher_suites = body.Vector(2);
  if (!body.ok()) return Fail(HelloErrc::kTruncatedBody);
  if (v.cipher_suites.empty() || v.cipher_suites.size() % 2 != 0) {
    return Fail(HelloErrc::kBadCipherSuites);
  }
  v.compression_methods = body.Vector(1);
  if (!body.ok()) return Fail(HelloErrc::kTruncatedBody);
  if (v.compression_methods.empty()) return Fail(HelloErrc::kBadCompression);

  // RFC 5246 §7.4.1.2: "the presence of extensions can be detected by determining whether
  // there are bytes following the compression_methods at the end of the ClientHello".
  v.has_extensions = body.remaining() > 0;
  if (v.has_extensions) {
    v.extensions = body.Vector(2);
    if (!body.ok() || body.remaining() != 0 || !ExtensionsWellFramed(v.extensions)) {
      return Fail(HelloErrc::kBadExtensions);
    }
  }
  return v;
}

}  // namespace coapgate::dtls
