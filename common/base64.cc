#include "common/base64.h"

namespace coapgate {

size_t Base64Encode(std::span<const std::byte> in, char* out) noexcept {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto byte = [&](size_t i) { return static_cast<uint32_t>(in[i]); };
  size_t pos = 0;
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out[pos++] = kAlphabet[v >> 18];
    out[pos++] = kAlphabet[(v >> 12) & 0x3f];
    out[pos++] = kAlphabet[(v >> 6) & 0x3f];
    out[pos++] = kAlphabet[v & 0x3f];
  }
  const size_t rest = in.size() - i;
  if (rest != 0) {
    const uint32_t v = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0);
    out[pos++] = kAlphabet[v >> 18];
    out[pos++] = kAlphabet[(v >> 12) & 0x3f];
    out[pos++] = rest == 2 ? kAlphabet[(v >> 6) & 0x3f] : '=';
    out[pos++] = '=';
  }
  return pos;
}

Result<std::vector<std::byte>, std::string> ParseBase64(std::string_view text) {
  std::vector<std::byte> out;
  uint32_t bits = 0;
  int count = 0;
  size_t padding = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+') {
      v = 62;
    } else if (c == '/') {
      v = 63;
    } else {
      return Fail("not a base64 character at position " + std::to_string(i) + ": '" + c + "'");
    }
    if (padding > 0) return Fail("data after '=' padding at position " + std::to_string(i));
    bits = bits << 6 | static_cast<uint32_t>(v);
    if (++count == 4) {
      out.push_back(static_cast<std::byte>(bits >> 16));
      out.push_back(static_cast<std::byte>(bits >> 8));
      out.push_back(static_cast<std::byte>(bits));
      bits = 0;
      count = 0;
    }
  }
  if (count == 1) return Fail(std::string("truncated: a lone base64 character at the end"));
  if (count == 2) out.push_back(static_cast<std::byte>(bits >> 4));
  if (count == 3) {
    out.push_back(static_cast<std::byte>(bits >> 10));
    out.push_back(static_cast<std::byte>(bits >> 2));
  }
  if (padding > 2) return Fail(std::string("too much '=' padding"));
  return out;
}

}  // namespace coapgate
