// OptionIterator: walks the options of a MessageView, yielding each option's number and a
// view of its value, with typed accessors decoded on demand.
//
// Invariant relied on: MessageView::options was validated by ParseMessage, so every option
// header and value lies inside it and numbers never exceed 65535. Iterating options that did
// not come from ParseMessage is undefined.
// Lifetime: OptionView::value and AsString() point into the datagram, like MessageView.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <span>
#include <string_view>

#include "codec/message.h"

namespace coapgate::codec {

struct OptionView {
  uint16_t number = 0;
  std::span<const std::byte> value;

  // RFC 7252 §3.2 uint: big-endian, any length 0..4 (0 bytes = 0). nullopt if longer.
  [[nodiscard]] std::optional<uint32_t> AsUint() const noexcept;
  // The value as bytes of text; no UTF-8 check (callers that need one do it).
  [[nodiscard]] std::string_view AsString() const noexcept {
    return {reinterpret_cast<const char*>(value.data()), value.size()};
  }
};

class OptionIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = OptionView;
  using difference_type = std::ptrdiff_t;
  using pointer = const OptionView*;
  using reference = const OptionView&;

  OptionIterator() = default;  // the end iterator
  explicit OptionIterator(std::span<const std::byte> validated_options) noexcept;

  reference operator*() const noexcept { return current_; }
  pointer operator->() const noexcept { return &current_; }
  OptionIterator& operator++() noexcept;
  OptionIterator operator++(int) noexcept {
    OptionIterator before = *this;
    ++*this;
    return before;
  }
  // Iterators compare equal when both are exhausted or stand on the same option byte.
  friend bool operator==(const OptionIterator& a, const OptionIterator& b) noexcept {
    return a.next_ == b.next_ && a.done_ == b.done_;
  }

 private:
  void Load() noexcept;

  const std::byte* next_ = nullptr;
  const std::byte* end_ = nullptr;
  bool done_ = true;
  OptionView current_;
};

// `for (const OptionView& o : Options(message))` over a parsed message's options.
class OptionRange {
 public:
  explicit OptionRange(std::span<const std::byte> validated_options) noexcept
      : options_(validated_options) {}
  [[nodiscard]] OptionIterator begin() const noexcept { return OptionIterator(options_); }
  [[nodiscard]] OptionIterator end() const noexcept { return {}; }

 private:
  std::span<const std::byte> options_;
};

[[nodiscard]] inline OptionRange Options(const MessageView& message) noexcept {
  return OptionRange(message.options);
}

}  // namespace coapgate::codec
