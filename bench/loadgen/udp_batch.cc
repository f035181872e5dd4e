#include "bench/loadgen/udp_batch.h"

#include <arpa/inet.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace coapgate::loadgen {
namespace {

void RaiseBuffers(int fd, int bytes) noexcept {
  // FORCE needs CAP_NET_ADMIN; without it the plain option is capped at rmem_max/wmem_max.
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  }
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  }
}

Result<int, std::string> Failed(int fd, const char* what) {
  const std::string reason = std::string(what) + ": " + std::strerror(errno);
  if (fd >= 0) close(fd);
  return Fail(reason);
}

}  // namespace

Result<int, std::string> OpenIpv4WorkerSocket(int buffer_bytes) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Failed(fd, "socket(AF_INET)");
  const int on = 1;
  if (setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on) != 0) {
    return Failed(fd, "setsockopt(IP_PKTINFO)");
  }
  RaiseBuffers(fd, buffer_bytes);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) {
    return Failed(fd, "bind(0.0.0.0:0)");
  }
  return fd;
}

Result<int, std::string> OpenIpv6DeviceSocket(int buffer_bytes) {
  const int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Failed(fd, "socket(AF_INET6)");
  RaiseBuffers(fd, buffer_bytes);
  sockaddr_in6 local{};
  local.sin6_family = AF_INET6;
  local.sin6_addr = in6addr_loopback;
  if (bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) {
    return Failed(fd, "bind([::1]:0)");
  }
  return fd;
}

int ReceiveBufferBytes(int fd) noexcept {
  int bytes = 0;
  socklen_t length = sizeof bytes;
  getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, &length);
  return bytes;
}

SendBatch::SendBatch(const sockaddr_storage& target, socklen_t target_length,
                     size_t max_datagram)
    : target_(target),
      target_length_(target_length),
      max_datagram_(max_datagram),
      buffer_(kBatchSize * max_datagram) {
  for (unsigned i = 0; i < kBatchSize; ++i) {
    msg_[i].msg_hdr.msg_name = &target_;
    msg_[i].msg_hdr.msg_namelen = target_length_;
    msg_[i].msg_hdr.msg_iov = &iov_[i];
    msg_[i].msg_hdr.msg_iovlen = 1;
  }
}

std::span<std::byte> SendBatch::Begin(int fd, uint32_t source_ipv4) noexcept {
  if (count_ == kBatchSize || (count_ > 0 && fd != fd_)) Flush();
  fd_ = fd;
  msghdr& h = msg_[count_].msg_hdr;
  if (source_ipv4 != 0) {
    std::byte* control = control_[count_].bytes;
    h.msg_control = control;
    h.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo));
    cmsghdr* c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
    in_pktinfo info{};
    info.ipi_spec_dst.s_addr = htonl(source_ipv4);
    std::memcpy(CMSG_DATA(c), &info, sizeof info);
  } else {
    h.msg_control = nullptr;
    h.msg_controllen = 0;
  }
  return {&buffer_[count_ * max_datagram_], max_datagram_};
}

void SendBatch::Commit(size_t size) noexcept {
  iov_[count_] = {&buffer_[count_ * max_datagram_], size};
  ++count_;
}

void SendBatch::Flush() noexcept {
  unsigned done = 0;
  // Loopback rarely pushes back (a full receiver drops, it does not block the sender); when the
  // send buffer is full, wait for room a few times, then give up on the rest.
  for (int stalls = 0; done < count_ && stalls < 4;) {
    const int n = sendmmsg(fd_, &msg_[done], count_ - done, 0);
    if (n > 0) {
      done += static_cast<unsigned>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != ENOBUFS) {
      ++send_errors_;  // this datagram is refused (e.g. EPERM): skip it, try the rest
      ++done;
      continue;
    }
    pollfd p{fd_, POLLOUT, 0};
    poll(&p, 1, 5);
    ++stalls;
  }
  send_errors_ += count_ - done;
  count_ = 0;
}

ReceiveBatch::ReceiveBatch() : buffer_(kBatchSize * kMaxDatagram) {
  for (unsigned i = 0; i < kBatchSize; ++i) {
    iov_[i] = {&buffer_[i * kMaxDatagram], kMaxDatagram};
    msg_[i].msg_hdr.msg_iov = &iov_[i];
    msg_[i].msg_hdr.msg_iovlen = 1;
  }
}

unsigned ReceiveBatch::Receive(int fd) noexcept {
  for (unsigned i = 0; i < kBatchSize; ++i) {  // the kernel overwrites these lengths
    msghdr& h = msg_[i].msg_hdr;
    h.msg_name = &source_[i];
    h.msg_namelen = sizeof source_[i];
    h.msg_control = control_[i].bytes;
    h.msg_controllen = sizeof control_[i].bytes;
    h.msg_flags = 0;
  }
  for (;;) {
    const int n = recvmmsg(fd, msg_.data(), kBatchSize, MSG_DONTWAIT, nullptr);
    if (n >= 0) return static_cast<unsigned>(n);
    if (errno != EINTR) return 0;
  }
}

ReceiveBatch::Datagram ReceiveBatch::Get(unsigned i) const noexcept {
  msghdr* h = &msg_[i].msg_hdr;
  Datagram d{};
  d.bytes = {&buffer_[i * kMaxDatagram], msg_[i].msg_len};
  d.truncated = (h->msg_flags & MSG_TRUNC) != 0;
  d.source = &source_[i];
  for (cmsghdr* c = CMSG_FIRSTHDR(h); c != nullptr; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
        c->cmsg_len >= CMSG_LEN(sizeof(in_pktinfo))) {
      in_pktinfo info;
      std::memcpy(&info, CMSG_DATA(c), sizeof info);
      d.destination_ipv4 = ntohl(info.ipi_addr.s_addr);
    }
  }
  return d;
}

bool SameEndpoint(const sockaddr_storage& source, const sockaddr_storage& target) noexcept {
  if (source.ss_family != target.ss_family) return false;
  if (source.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(source);
    const auto& b = reinterpret_cast<const sockaddr_in&>(target);
    return a.sin_port == b.sin_port && a.sin_addr.s_addr == b.sin_addr.s_addr;
  }
  const auto& a = reinterpret_cast<const sockaddr_in6&>(source);
  const auto& b = reinterpret_cast<const sockaddr_in6&>(target);
  return a.sin6_port == b.sin6_port &&
         std::memcmp(&a.sin6_addr, &b.sin6_addr, sizeof a.sin6_addr) == 0;
}

}  // namespace coapgate::loadgen
