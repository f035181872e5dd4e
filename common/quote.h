// User text as an error message shows it. Messages are one log line each, so no input may
// split one: control characters are escaped (\n, \t, \r, \xNN), and quoted text also escapes
// '"' and '\'. Pure functions, any thread; control plane (they allocate).
//
// Not for showing binary data (the dissect tool's \xNN byte strings): this keeps UTF-8 text
// as it is, which is what a person wrote in a config or template file.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace coapgate {

// Values quoted in messages are cut to this many bytes so that an error stays readable.
inline constexpr size_t kMaxQuotedBytes = 80;

// "text" between double quotes, escaped, cut at kMaxQuotedBytes on a UTF-8 character
// boundary (then followed by "...").
[[nodiscard]] std::string QuoteForMessage(std::string_view text);

// The text escaped as above but not quoted and not cut (for text that is already the
// message's subject, e.g. a path).
[[nodiscard]] std::string OneLineForMessage(std::string_view text);

}  // namespace coapgate
