// The `t` topic rules of the reference system (SPEC §2): at most 253 characters, only
// [A-Za-z0-9_/], never "//". An empty topic means "no topic" and is handled by the caller.
#pragma once

#include <cstddef>
#include <string_view>

namespace coapgate::codec {

// 255 bytes of Uri-Query value minus the "t=" prefix.
inline constexpr size_t kMaxTopicLength = 253;

[[nodiscard]] bool IsValidTopic(std::string_view topic) noexcept;

}  // namespace coapgate::codec
