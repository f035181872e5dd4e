// The invariant checks the libFuzzer targets share: a failed one aborts, which libFuzzer
// reports as a crash with the input that caused it. Header-only; any thread.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <span>

namespace coapgate::fuzz {

inline void Check(bool condition) {
  if (!condition) std::abort();
}

// Whether `part` is a view into `whole` (an empty view is anywhere).
inline bool Inside(std::span<const std::byte> part, std::span<const std::byte> whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

}  // namespace coapgate::fuzz
