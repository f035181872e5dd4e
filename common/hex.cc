#include "common/hex.h"

namespace coapgate {

bool IsStrictHex(std::string_view text) noexcept {
  if (text.empty() || text.size() % 2 != 0) return false;
  for (char c : text) {
    if (HexDigitValue(c) < 0) return false;
  }
  return true;
}

Result<size_t, HexErrc> DecodeHex(std::string_view text, std::span<std::byte> out) noexcept {
  if (!IsStrictHex(text)) return Fail(HexErrc::kBadHex);
  const size_t n = text.size() / 2;
  if (n > out.size()) return Fail(HexErrc::kTooLong);
  for (size_t i = 0; i < n; ++i) {
    out[i] = static_cast<std::byte>(HexDigitValue(text[2 * i]) << 4 |
                                    HexDigitValue(text[2 * i + 1]));
  }
  return n;
}

Result<std::vector<std::byte>, std::string> ParseHex(std::string_view text) {
  std::vector<std::byte> out;
  int high = -1;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == ':' || c == '\t' || c == '\n' || c == '\r') {
      if (high >= 0) return Fail("odd hex digit before position " + std::to_string(i));
      continue;
    }
    if (c == '0' && high < 0 && i + 1 < text.size() && (text[i + 1] == 'x' || text[i + 1] == 'X')) {
      ++i;
      continue;
    }
    const int v = HexDigitValue(c);
    if (v < 0) {
      return Fail("not a hex digit at position " + std::to_string(i) + ": '" + c + "'");
    }
    if (high < 0) {
      high = v;
    } else {
      out.push_back(static_cast<std::byte>(high << 4 | v));
      high = -1;
    }
  }
  if (high >= 0) return Fail(std::string("odd number of hex digits"));
  return out;
}

std::string HexString(std::span<const std::byte> bytes) {
  std::string out;
  for (std::byte b : bytes) {
    if (!out.empty()) out += ' ';
    static constexpr char kDigits[] = "0123456789abcdef";
    out += kDigits[static_cast<unsigned>(b) >> 4];
    out += kDigits[static_cast<unsigned>(b) & 0x0f];
  }
  return out;
}

}  // namespace coapgate
