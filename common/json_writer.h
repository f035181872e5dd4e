// JsonWriter: appends JSON text to a caller's fixed buffer, never past its end, never
// allocating. It remembers an overflow instead of reporting each write, so a formatter writes
// straight through and checks once at the end (the envelopes, the Energy Saver's output).
// Strings go through JsonEscape (common/json_escape.h), bytes through Base64Encode
// (common/base64.h): one rule for every JSON text coapgate writes.
//
// Thread contract: a value type over a caller span; one writer per thread at a time. Every
// member is noexcept and allocation-free (the publisher threads run it once per message).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace coapgate {

// Chars of the decimal text of `v` (1..20).
[[nodiscard]] size_t DecimalLength(uint64_t v) noexcept;

class JsonWriter {
 public:
  explicit JsonWriter(std::span<char> out) noexcept : out_(out) {}

  // Each append writes all of its text or, if that does not fit, nothing and sets the
  // overflow flag; once set, every later append is a no-op, so the written prefix is never
  // followed by unrelated text.
  void Char(char c) noexcept;
  void Literal(std::string_view text) noexcept;
  // `text` JSON-escaped, without quotes.
  void Escaped(std::string_view text) noexcept;
  // Standard base64 of `bytes` ('=' padded), without quotes.
  void Base64(std::span<const std::byte> bytes) noexcept;
  void Decimal(uint64_t v) noexcept;
  void SignedDecimal(int64_t v) noexcept;
  // `n` chars for the caller to fill (e.g. number text of its own), or an empty span, with
  // the overflow flag set, if they do not fit. n == 0 returns an empty span and sets nothing.
  [[nodiscard]] std::span<char> Reserve(size_t n) noexcept;

  [[nodiscard]] bool overflow() const noexcept { return overflow_; }
  // Chars written so far. Invariant: size() <= the buffer's size.
  [[nodiscard]] size_t size() const noexcept { return size_; }

 private:
  std::span<char> out_;
  size_t size_ = 0;
  bool overflow_ = false;
};

}  // namespace coapgate
