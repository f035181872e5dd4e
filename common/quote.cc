#include "common/quote.h"

namespace coapgate {
namespace {

// With `quoted`, also escapes '"' and '\' (the text goes between double quotes).
void AppendEscaped(std::string_view text, bool quoted, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\n') {
      out->append("\\n");
    } else if (c == '\t') {
      out->append("\\t");
    } else if (c == '\r') {
      out->append("\\r");
    } else if (byte < 0x20 || byte == 0x7f) {
      out->append("\\x");
      out->push_back(kHex[byte >> 4]);
      out->push_back(kHex[byte & 0xf]);
    } else {
      if (quoted && (c == '"' || c == '\\')) out->push_back('\\');
      out->push_back(c);
    }
  }
}

}  // namespace

std::string QuoteForMessage(std::string_view text) {
  std::string out = "\"";
  if (text.size() <= kMaxQuotedBytes) {
    AppendEscaped(text, /*quoted=*/true, &out);
    out.push_back('"');
    return out;
  }
  size_t cut = kMaxQuotedBytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) --cut;
  AppendEscaped(text.substr(0, cut), /*quoted=*/true, &out);
  out.append("\"...");
  return out;
}

std::string OneLineForMessage(std::string_view text) {
  std::string out;
  AppendEscaped(text, /*quoted=*/false, &out);
  return out;
}

}  // namespace coapgate
