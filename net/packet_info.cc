// IP_PKTINFO / IPV6_PKTINFO control messages and the reply datagrams built around them,
// shared by both DatagramIo backends.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "net/datagram_io.h"

namespace coapgate::net {

LocalAddress ParsePacketInfo(const msghdr& header) noexcept {
  LocalAddress local;
  // CMSG_NXTHDR takes a non-const msghdr; it only reads through it.
  auto* h = const_cast<msghdr*>(&header);
  for (cmsghdr* c = CMSG_FIRSTHDR(h); c != nullptr; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
        c->cmsg_len >= CMSG_LEN(sizeof(in_pktinfo))) {
      in_pktinfo info;
      std::memcpy(&info, CMSG_DATA(c), sizeof(info));
      local.family = AF_INET;
      local.ifindex = static_cast<uint32_t>(info.ipi_ifindex);
      // The local address, not the header's destination (which may be a broadcast).
      std::memcpy(local.address.data(), &info.ipi_spec_dst, sizeof(info.ipi_spec_dst));
      return local;
    }
    if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
        c->cmsg_len >= CMSG_LEN(sizeof(in6_pktinfo))) {
      in6_pktinfo info;
      std::memcpy(&info, CMSG_DATA(c), sizeof(info));
      local.family = AF_INET6;
      local.ifindex = info.ipi6_ifindex;
      std::memcpy(local.address.data(), &info.ipi6_addr, sizeof(info.ipi6_addr));
      return local;
    }
  }
  return local;
}

namespace {

// Writes a control message making a reply leave from `local` into `buffer`
// (kPacketInfoSpace bytes) and returns its length, or 0 when `local` is unknown.
size_t BuildPacketInfo(const LocalAddress& local, std::byte* buffer) noexcept {
  std::memset(buffer, 0, kPacketInfoSpace);
  auto* c = reinterpret_cast<cmsghdr*>(buffer);
  if (local.family == AF_INET) {
    in_pktinfo info{};
    // ipi_spec_dst is the source to use; the interface is left to routing.
    std::memcpy(&info.ipi_spec_dst, local.address.data(), sizeof(info.ipi_spec_dst));
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(info));
    std::memcpy(CMSG_DATA(c), &info, sizeof(info));
    return CMSG_SPACE(sizeof(info));
  }
  if (local.family == AF_INET6) {
    in6_pktinfo info{};
    std::memcpy(&info.ipi6_addr, local.address.data(), sizeof(info.ipi6_addr));
    info.ipi6_ifindex = local.ifindex;
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(info));
    std::memcpy(CMSG_DATA(c), &info, sizeof(info));
    return CMSG_SPACE(sizeof(info));
  }
  return 0;
}

}  // namespace

void ReplyMessage::Fill(const sockaddr* peer_address, socklen_t peer_length,
                        const LocalAddress& local, std::span<const std::byte> bytes) noexcept {
  std::memcpy(data, bytes.data(), bytes.size());
  std::memcpy(&peer, peer_address, peer_length);
  iov = {data, bytes.size()};
  header = {};
  header.msg_name = &peer;
  header.msg_namelen = peer_length;
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  if (const size_t n = BuildPacketInfo(local, control); n != 0) {
    header.msg_control = control;
    header.msg_controllen = n;
  }
}

}  // namespace coapgate::net
