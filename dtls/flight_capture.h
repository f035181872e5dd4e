// FlightCapture: a copy of what wolfSSL sends during one handshake call, so that the final
// flight (ChangeCipherSpec + Finished) can be kept after wolfSSL's own handshake state is
// freed (see DtlsEndpoint::CompleteHandshake) and resent when the peer shows it lost it.
//
// The bytes are a sequence of datagrams, each as [2-byte big-endian length][datagram]; the
// same format is what a session keeps and what Replay walks. A capture records only the
// datagrams of the session it was begun for; one that does not fit its fixed buffer is
// marked overflowed and must not be kept (a partial flight would be resent as if whole).
//
// Thread contract: not thread-safe; owned by one DtlsEndpoint, used on the shard's thread.
// No allocation.
#pragma once

#include <array>
#include <cstddef>
#include <span>

namespace coapgate::dtls {

class FlightCapture {
 public:
  static constexpr size_t kCapacity = 1024;  // a PSK final flight is about 100 B

  // Starts a fresh capture of what `owner` sends (any stable pointer naming the session).
  void Begin(const void* owner) noexcept {
    size_ = 0;
    overflow_ = false;
    owner_ = owner;
  }
  // Stops recording; what was captured stays readable until the next Begin.
  void End() noexcept { owner_ = nullptr; }
  // Records `datagram` if a capture for `owner` is in progress.
  void Append(const void* owner, std::span<const std::byte> datagram) noexcept;

  // The captured flight, or empty if nothing was sent or it did not fit.
  [[nodiscard]] std::span<const std::byte> flight() const noexcept {
    if (overflow_) return {};
    return std::span<const std::byte>(buffer_.data(), size_);
  }
  [[nodiscard]] static constexpr size_t buffer_bytes() noexcept { return kCapacity; }

  // Calls `send` once per datagram of a flight in the capture format, in order; stops at a
  // truncated entry. Returns how many datagrams it passed on.
  template <typename Send>
  static size_t Replay(std::span<const std::byte> flight, Send&& send) noexcept {
    size_t sent = 0;
    while (flight.size() >= 2) {
      const size_t n = (static_cast<size_t>(flight[0]) << 8) | static_cast<size_t>(flight[1]);
      if (flight.size() - 2 < n) break;
      send(flight.subspan(2, n));
      flight = flight.subspan(2 + n);
      ++sent;
    }
    return sent;
  }

 private:
  std::array<std::byte, kCapacity> buffer_{};
  size_t size_ = 0;
  bool overflow_ = false;
  const void* owner_ = nullptr;
};

}  // namespace coapgate::dtls
