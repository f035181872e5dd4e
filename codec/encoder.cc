#include "codec/encoder.h"

#include <algorithm>

#include "codec/code.h"
#include "codec/option_number.h"

namespace coapgate::codec {
namespace {

// Appends bytes to a fixed buffer; remembers overflow instead of writing past the end, so
// the encoder reads straight through and checks once.
class Writer {
 public:
  explicit Writer(std::span<std::byte> out) noexcept : out_(out) {}

  void Byte(uint8_t b) noexcept {
    if (size_ < out_.size()) {
      out_[size_] = static_cast<std::byte>(b);
    } else {
      overflow_ = true;
    }
    ++size_;
  }
  void Bytes(std::span<const std::byte> bytes) noexcept {
    if (bytes.size() > out_.size() - std::min(size_, out_.size())) {
      overflow_ = true;
    } else if (!bytes.empty()) {
      std::copy(bytes.begin(), bytes.end(), out_.begin() + static_cast<std::ptrdiff_t>(size_));
    }
    size_ += bytes.size();
  }
  [[nodiscard]] bool overflow() const noexcept { return overflow_; }
  [[nodiscard]] size_t size() const noexcept { return size_; }

 private:
  std::span<std::byte> out_;
  size_t size_ = 0;
  bool overflow_ = false;
};

// The 4-bit form of a delta or length and its extended bytes (RFC 7252 §3.1).
struct Nibble {
  uint8_t nibble;
  uint8_t extended_size;
  uint16_t extended;
};

[[nodiscard]] Nibble NibbleOf(uint32_t v) noexcept {
  if (v < 13) return {static_cast<uint8_t>(v), 0, 0};
  if (v < 269) return {13, 1, static_cast<uint16_t>(v - 13)};
  return {14, 2, static_cast<uint16_t>(v - 269)};
}

void WriteExtended(Writer& w, const Nibble& n) noexcept {
  if (n.extended_size == 2) w.Byte(static_cast<uint8_t>(n.extended >> 8));
  if (n.extended_size >= 1) w.Byte(static_cast<uint8_t>(n.extended & 0xff));
}

// Writes a uint option with the minimal number of value bytes (RFC 7252 §3.2).
void WriteUintOption(Writer& w, uint16_t* previous, uint16_t number, uint32_t value) noexcept {
  uint8_t bytes[4];
  uint32_t length = 0;
  for (uint32_t v = value; v != 0; v >>= 8) ++length;
  for (uint32_t i = 0; i < length; ++i) {
    bytes[i] = static_cast<uint8_t>(value >> (8 * (length - 1 - i)));
  }
  const Nibble delta = NibbleOf(number - *previous);
  const Nibble len = NibbleOf(length);
  w.Byte(static_cast<uint8_t>(delta.nibble << 4 | len.nibble));
  WriteExtended(w, delta);
  WriteExtended(w, len);
  for (uint32_t i = 0; i < length; ++i) w.Byte(bytes[i]);
  *previous = number;
}

}  // namespace

std::string_view ToString(EncodeErrc errc) noexcept {
  switch (errc) {
    case EncodeErrc::kBufferTooSmall: return "buffer_too_small";
    case EncodeErrc::kTokenTooLong: return "token_too_long";
    case EncodeErrc::kBadEmpty: return "bad_empty";
    case EncodeErrc::kBadCode: return "bad_code";
  }
  return "unknown";
}

Result<size_t, EncodeErrc> EncodeMessage(const OutgoingMessage& m,
                                         std::span<std::byte> out) noexcept {
  if (m.token.size() > kMaxTokenLength) return Fail(EncodeErrc::kTokenTooLong);
  if (IsReservedClass(m.code)) return Fail(EncodeErrc::kBadCode);
  const bool has_options = m.content_format || m.max_age || m.size1;
  if (m.code == code::kEmpty && (!m.token.empty() || has_options || !m.payload.empty())) {
    return Fail(EncodeErrc::kBadEmpty);
  }
  Writer w(out);
  w.Byte(static_cast<uint8_t>(0x40 | static_cast<uint8_t>(m.type) << 4 | m.token.size()));
  w.Byte(m.code);
  w.Byte(static_cast<uint8_t>(m.message_id >> 8));
  w.Byte(static_cast<uint8_t>(m.message_id & 0xff));
  w.Bytes(m.token);
  uint16_t previous = 0;
  if (m.content_format) WriteUintOption(w, &previous, option::kContentFormat, *m.content_format);
  if (m.max_age) WriteUintOption(w, &previous, option::kMaxAge, *m.max_age);
  if (m.size1) WriteUintOption(w, &previous, option::kSize1, *m.size1);
  if (!m.payload.empty()) {
    w.Byte(0xff);
    w.Bytes(m.payload);
  }
  if (w.overflow()) return Fail(EncodeErrc::kBufferTooSmall);
  return w.size();
}

OutgoingMessage ResponseTo(const MessageView& request, uint8_t code,
                           uint16_t non_message_id) noexcept {
  OutgoingMessage response;
  if (request.confirmable()) {
    response.type = MessageType::kAcknowledgement;
    response.message_id = request.message_id;
  } else {
    response.type = MessageType::kNonConfirmable;
    response.message_id = non_message_id;
  }
  response.code = code;
  response.token = request.token;
  return response;
}

Result<size_t, EncodeErrc> EncodeReset(uint16_t message_id, std::span<std::byte> out) noexcept {
  OutgoingMessage reset;
  reset.type = MessageType::kReset;
  reset.code = code::kEmpty;
  reset.message_id = message_id;
  return EncodeMessage(reset, out);
}

}  // namespace coapgate::codec
