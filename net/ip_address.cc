#include "net/ip_address.h"

#include <arpa/inet.h>

#include <cstring>

#include "common/hash.h"

namespace coapgate::net {
namespace {

constexpr uint8_t kV4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

}  // namespace

std::optional<IpAddress> IpAddress::Parse(std::string_view text) {
  char buffer[INET6_ADDRSTRLEN + 1];
  if (text.empty() || text.size() >= sizeof(buffer)) return std::nullopt;
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  in_addr v4;
  if (inet_pton(AF_INET, buffer, &v4) == 1) return FromV4(v4);
  in6_addr v6;
  if (inet_pton(AF_INET6, buffer, &v6) == 1) return FromV6(v6);
  return std::nullopt;
}

IpAddress IpAddress::FromV4(const in_addr& a) noexcept {
  IpAddress ip;
  std::memcpy(ip.bytes_.data(), kV4MappedPrefix, 12);
  std::memcpy(ip.bytes_.data() + 12, &a.s_addr, 4);
  return ip;
}

IpAddress IpAddress::FromV6(const in6_addr& a) noexcept {
  IpAddress ip;
  std::memcpy(ip.bytes_.data(), a.s6_addr, 16);
  return ip;
}

std::optional<IpAddress> IpAddress::FromSockaddr(const sockaddr* sa) noexcept {
  if (sa->sa_family == AF_INET) {
    sockaddr_in sin;
    std::memcpy(&sin, sa, sizeof(sin));
    return FromV4(sin.sin_addr);
  }
  if (sa->sa_family == AF_INET6) {
    sockaddr_in6 sin6;
    std::memcpy(&sin6, sa, sizeof(sin6));
    return FromV6(sin6.sin6_addr);
  }
  return std::nullopt;
}

bool IpAddress::is_v4() const noexcept {
  return std::memcmp(bytes_.data(), kV4MappedPrefix, 12) == 0;
}

size_t IpAddress::Format(char* out) const noexcept {
  const char* ok = is_v4() ? inet_ntop(AF_INET, bytes_.data() + 12, out, INET_ADDRSTRLEN)
                           : inet_ntop(AF_INET6, bytes_.data(), out, INET6_ADDRSTRLEN);
  return ok == nullptr ? 0 : std::strlen(out);
}

std::string IpAddress::ToString() const {
  char buffer[INET6_ADDRSTRLEN];
  return std::string(buffer, Format(buffer));
}

uint64_t IpAddress::Hash() const noexcept {
  // Addresses in one subnet differ only in their low bytes: Mix64 spreads them.
  uint64_t hi;
  uint64_t lo;
  std::memcpy(&hi, bytes_.data(), 8);
  std::memcpy(&lo, bytes_.data() + 8, 8);
  return Mix64(hi ^ (lo * 0x9e3779b97f4a7c15ULL));
}

}  // namespace coapgate::net
