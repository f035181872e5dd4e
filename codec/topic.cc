#include "codec/topic.h"

#include <array>
#include <cstdint>

namespace coapgate::codec {
namespace {

constexpr auto kTopicChars = [] {
  std::array<bool, 256> allowed{};
  for (int c = 'a'; c <= 'z'; ++c) allowed[static_cast<size_t>(c)] = true;
  for (int c = 'A'; c <= 'Z'; ++c) allowed[static_cast<size_t>(c)] = true;
  for (int c = '0'; c <= '9'; ++c) allowed[static_cast<size_t>(c)] = true;
  allowed['_'] = true;
  allowed['/'] = true;
  return allowed;
}();

}  // namespace

bool IsValidTopic(std::string_view topic) noexcept {
  if (topic.empty() || topic.size() > kMaxTopicLength) return false;
  // No early exit: topics are short and almost always valid, so a straight pass that folds
  // both rules into two flags beats a branch per character.
  bool all_allowed = true;
  bool double_slash = false;
  bool previous_slash = false;
  for (const char c : topic) {
    const bool slash = c == '/';
    all_allowed &= kTopicChars[static_cast<uint8_t>(c)];
    double_slash |= slash & previous_slash;
    previous_slash = slash;
  }
  return all_allowed && !double_slash;
}

}  // namespace coapgate::codec
