// LocalAddress: the address a datagram was sent TO, as IP_PKTINFO / IPV6_PKTINFO report it on
// a wildcard-bound socket. A reply must leave from that address: on a host with several
// addresses (or behind a NAT or a DNAT load balancer) a reply from another one is dropped by
// the device. The I/O backends fill it (net/packet_info.cc), the DTLS endpoint carries it in
// a session's route, and the sends put it back into the reply's control message.
//
// A plain value (no heap, trivially copyable): it is copied into every in-flight slot and
// every DTLS route.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <type_traits>

namespace coapgate::net {

struct LocalAddress {
  sa_family_t family = 0;  ///< AF_INET, AF_INET6, or 0 = unknown (the kernel chooses)
  uint32_t ifindex = 0;    ///< needed for IPv6 link-local destinations
  std::array<uint8_t, 16> address{};  ///< in_addr in the first 4 bytes for AF_INET
};
static_assert(std::is_trivially_copyable_v<LocalAddress>);

}  // namespace coapgate::net
