#include "common/json_writer.h"

#include <array>
#include <charconv>
#include <cstring>

#include "common/base64.h"
#include "common/json_escape.h"

namespace coapgate {

size_t DecimalLength(uint64_t v) noexcept {
  size_t n = 1;
  while (v >= 10) {
    v /= 10;
    ++n;
  }
  return n;
}

std::span<char> JsonWriter::Reserve(size_t n) noexcept {
  if (overflow_ || n > out_.size() - size_) {
    overflow_ = true;
    return {};
  }
  const std::span<char> room = out_.subspan(size_, n);
  size_ += n;
  return room;
}

void JsonWriter::Char(char c) noexcept {
  const std::span<char> room = Reserve(1);
  if (!room.empty()) room[0] = c;
}

void JsonWriter::Literal(std::string_view text) noexcept {
  const std::span<char> room = Reserve(text.size());
  if (!room.empty()) std::memcpy(room.data(), text.data(), text.size());
}

void JsonWriter::Escaped(std::string_view text) noexcept {
  if (overflow_ || text.empty()) return;
  const size_t n = JsonEscape(text, out_.subspan(size_));
  if (n == 0) overflow_ = true;  // non-empty input always writes something when it fits
  size_ += n;
}

void JsonWriter::Base64(std::span<const std::byte> bytes) noexcept {
  const std::span<char> room = Reserve(Base64Length(bytes.size()));
  if (!room.empty()) (void)Base64Encode(bytes, room.data());
}

void JsonWriter::Decimal(uint64_t v) noexcept {
  std::array<char, 20> digits;  // UINT64_MAX = 18446744073709551615
  const auto r = std::to_chars(digits.data(), digits.data() + digits.size(), v);
  Literal({digits.data(), static_cast<size_t>(r.ptr - digits.data())});
}

void JsonWriter::SignedDecimal(int64_t v) noexcept {
  std::array<char, 20> digits;  // INT64_MIN = -9223372036854775808
  const auto r = std::to_chars(digits.data(), digits.data() + digits.size(), v);
  Literal({digits.data(), static_cast<size_t>(r.ptr - digits.data())});
}

}  // namespace coapgate
