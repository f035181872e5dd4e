// RFC 3339 timestamps in UTC, as coapgate's JSON logs and admin answers write them:
// "2026-12-02T10:23:21.567Z" (with milliseconds) or "2026-12-02T10:23:21Z".
//
// Pure function; no allocation; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace coapgate {

// Long enough for any year up to 9999, milliseconds included, plus a NUL.
inline constexpr size_t kRfc3339Size = 32;

// Writes `unix_ms` (milliseconds since 1970-01-01T00:00:00Z) into `out`; returns the length
// (without the NUL it also writes). `milliseconds`: keep the ".mmm" part.
size_t FormatRfc3339(uint64_t unix_ms, bool milliseconds, std::span<char, kRfc3339Size> out) noexcept;

}  // namespace coapgate
