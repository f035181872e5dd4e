// Result<T, E>: the value-or-error type of coapgate's data plane.
//
// Data-plane functions never throw and never allocate to report an error: they return a
// Result whose error is a small enum (see message.h, request.h, encoder.h). tl::expected
// (Debian libexpected-dev) stands in for std::expected, which g++ 12 only has under
// -std=c++2b; switching later is this one file.
#pragma once

#include <tl/expected.hpp>

namespace coapgate {

template <class T, class E>
using Result = tl::expected<T, E>;

template <class E>
[[nodiscard]] constexpr tl::unexpected<E> Fail(E error) noexcept {
  return tl::unexpected<E>(error);
}

}  // namespace coapgate
