#include "dtls/flight_capture.h"

#include <cstring>

namespace coapgate::dtls {

void FlightCapture::Append(const void* owner, std::span<const std::byte> datagram) noexcept {
  if (owner_ == nullptr || owner != owner_) return;
  const size_t n = datagram.size();
  if (n > 0xffff || size_ + 2 + n > buffer_.size()) {
    overflow_ = true;
    return;
  }
  buffer_[size_] = static_cast<std::byte>(n >> 8);
  buffer_[size_ + 1] = static_cast<std::byte>(n & 0xff);
  std::memcpy(buffer_.data() + size_ + 2, datagram.data(), n);
  size_ += 2 + n;
}

}  // namespace coapgate::dtls
