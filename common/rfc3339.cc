#include "common/rfc3339.h"

#include <cstdio>
#include <ctime>

namespace coapgate {

size_t FormatRfc3339(uint64_t unix_ms, bool milliseconds,
                     std::span<char, kRfc3339Size> out) noexcept {
  const auto seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  const int n =
      milliseconds
          ? std::snprintf(out.data(), out.size(), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
                          utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                          utc.tm_min, utc.tm_sec, static_cast<unsigned>(unix_ms % 1000))
          : std::snprintf(out.data(), out.size(), "%04d-%02d-%02dT%02d:%02d:%02dZ",
                          utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                          utc.tm_min, utc.tm_sec);
  return n > 0 && static_cast<size_t>(n) < out.size() ? static_cast<size_t>(n) : 0;
}

}  // namespace coapgate
