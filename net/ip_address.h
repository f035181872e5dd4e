// IpAddress: an IPv4 or IPv6 address as 16 bytes (IPv4 stored v4-mapped, ::ffff:a.b.c.d), the
// form device identities and dedup keys use, so both families share one code path.
//
// A plain value; any thread.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace coapgate::net {

class IpAddress {
 public:
  IpAddress() = default;  // :: (unspecified)

  // "100.91.200.24", "2001:db8::1", "::ffff:10.0.0.1". nullopt for anything else.
  [[nodiscard]] static std::optional<IpAddress> Parse(std::string_view text);
  [[nodiscard]] static IpAddress FromV4(const in_addr& a) noexcept;
  [[nodiscard]] static IpAddress FromV6(const in6_addr& a) noexcept;
  // From a socket address of family AF_INET or AF_INET6; nullopt for other families.
  [[nodiscard]] static std::optional<IpAddress> FromSockaddr(const sockaddr* sa) noexcept;

  [[nodiscard]] bool is_v4() const noexcept;
  [[nodiscard]] const std::array<uint8_t, 16>& bytes() const noexcept { return bytes_; }
  // Dotted quad for IPv4, RFC 5952 text for IPv6: what the envelope's device.ip shows.
  [[nodiscard]] std::string ToString() const;
  // Writes ToString() into `out` (at least INET6_ADDRSTRLEN bytes); returns the length.
  size_t Format(char* out) const noexcept;
  [[nodiscard]] uint64_t Hash() const noexcept;

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

}  // namespace coapgate::net
