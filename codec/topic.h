// The `t` topic rules of the reference system (docs/protocol.md): at most 253 characters, only
// [A-Za-z0-9_/], never "//". An empty topic means "no topic" and is handled by the caller.
#pragma once

#include <cstddef>
#include <string_view>

#include "common/limits.h"

namespace coapgate::codec {

using ::coapgate::kMaxTopicLength;  // common/limits.h

[[nodiscard]] bool IsValidTopic(std::string_view topic) noexcept;

}  // namespace coapgate::codec
