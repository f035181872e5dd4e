#include "codec/option_iterator.h"

#include "codec/internal/option_header.h"

namespace coapgate::codec {

std::optional<uint32_t> OptionView::AsUint() const noexcept {
  if (value.size() > 4) return std::nullopt;
  uint32_t v = 0;
  for (std::byte b : value) v = (v << 8) | static_cast<uint8_t>(b);
  return v;
}

OptionIterator::OptionIterator(std::span<const std::byte> validated_options) noexcept
    : next_(validated_options.data()),
      end_(validated_options.data() + validated_options.size()),
      done_(false) {
  Load();
}

OptionIterator& OptionIterator::operator++() noexcept {
  Load();
  return *this;
}

void OptionIterator::Load() noexcept {
  if (next_ == end_) {
    // Exhausted: become equal to the default-constructed end iterator.
    next_ = end_ = nullptr;
    done_ = true;
    return;
  }
  internal::OptionHeader header{};
  // Validated input always decodes (ParseMessage ends `options` before the marker); should
  // anything else be passed in, stop rather than read past it.
  if (internal::DecodeOptionHeader(next_, end_, &header) != internal::OptionHeaderStatus::kOk ||
      static_cast<size_t>(end_ - next_) < header.header_size + header.length) {
    next_ = end_ = nullptr;
    done_ = true;
    return;
  }
  current_.number = static_cast<uint16_t>(current_.number + header.delta);
  current_.value = std::span<const std::byte>(next_ + header.header_size, header.length);
  next_ += header.header_size + header.length;
}

}  // namespace coapgate::codec
