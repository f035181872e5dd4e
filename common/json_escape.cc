#include "common/json_escape.h"

#include <cstring>

namespace coapgate {
namespace {

constexpr char kEscapeHex[] = "0123456789abcdef";
constexpr std::string_view kReplacementEscape = "\\ufffd";

// Escaped width of an ASCII byte: 1 (as is), 2 (\" or \\) or 6 (\u00XX).
constexpr size_t AsciiWidth(unsigned char c) noexcept {
  return c < 0x20 ? 6 : (c == '"' || c == '\\') ? 2 : 1;
}

}  // namespace

Utf8Step NextUtf8(std::string_view s) noexcept {
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) return {1, true};
  size_t need = 0;
  unsigned char lo = 0x80;  // allowed range of the second byte (excludes overlongs,
  unsigned char hi = 0xbf;  // surrogates and code points above U+10FFFF)
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    need = 2;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    need = 3;
    if (b0 == 0xe0) lo = 0xa0;
    if (b0 == 0xed) hi = 0x9f;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    need = 4;
    if (b0 == 0xf0) lo = 0x90;
    if (b0 == 0xf4) hi = 0x8f;
  } else {
    return {1, false};
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= s.size()) return {i, false};
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xbf)) return {i, false};
  }
  return {need, true};
}

size_t JsonEscape(std::string_view in, std::span<char> out) noexcept {
  size_t pos = 0;
  const auto put = [&](std::string_view text) {
    if (text.size() > out.size() - pos) return false;
    std::memcpy(out.data() + pos, text.data(), text.size());
    pos += text.size();
    return true;
  };
  size_t i = 0;
  while (i < in.size()) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c < 0x80 && AsciiWidth(c) == 1) {
      // A run of bytes that pass as they are: one bounds check, one copy.
      size_t end = i + 1;
      while (end < in.size() && static_cast<unsigned char>(in[end]) < 0x80 &&
             AsciiWidth(static_cast<unsigned char>(in[end])) == 1) {
        ++end;
      }
      if (!put(in.substr(i, end - i))) return 0;
      i = end;
    } else if (c < 0x80) {
      const char escape[6] = {'\\', 'u', '0', '0', kEscapeHex[c >> 4], kEscapeHex[c & 0xf]};
      const char quoted[2] = {'\\', static_cast<char>(c)};
      if (!put(AsciiWidth(c) == 2 ? std::string_view(quoted, 2) : std::string_view(escape, 6))) {
        return 0;
      }
      ++i;
    } else {
      const Utf8Step step = NextUtf8(in.substr(i));
      if (!put(step.valid ? in.substr(i, step.length) : kReplacementEscape)) return 0;
      i += step.length;
    }
  }
  return pos;
}

size_t JsonEscapedLength(std::string_view in) noexcept {
  size_t n = 0;
  size_t i = 0;
  while (i < in.size()) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c < 0x80) {
      n += AsciiWidth(c);
      ++i;
    } else {
      const Utf8Step step = NextUtf8(in.substr(i));
      n += step.valid ? step.length : kReplacementEscape.size();
      i += step.length;
    }
  }
  return n;
}


}  // namespace coapgate
