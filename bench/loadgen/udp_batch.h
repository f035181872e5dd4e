// The load generator's datagram I/O: the sockets, and batches of datagrams sent with one
// sendmmsg and received with one recvmmsg.
//
// IPv4: one unconnected socket per worker, bound to 0.0.0.0 on an ephemeral port with
// IP_PKTINFO on. Each datagram carries its device's source address in an IP_PKTINFO control
// message (ipi_spec_dst), which Linux accepts for any address of 127/8 because the whole
// prefix is a local route on lo; no IP_FREEBIND or IP_TRANSPARENT is needed. Replies come back
// to that address and the same port, so the one socket receives them all, and IP_PKTINFO on
// receive (ipi_addr) says which device each reply is for. The socket has to be bound to the
// wildcard address for that: one bound to 127.0.0.1 would not receive datagrams for 127.1.0.1.
//
// IPv6: ::1 is the only loopback address, so a device is a socket of its own, bound to
// [::1]:ephemeral (see address_plan.h); datagrams carry no control message.
//
// Thread contract: a batch and the sockets it is used with belong to one worker.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace coapgate::loadgen {

inline constexpr unsigned kBatchSize = 64;

// The worker socket for IPv4 devices, or a device socket for IPv6; non-blocking, with the
// receive and send buffers raised to `buffer_bytes` (SO_RCVBUFFORCE when permitted, else as far
// as net.core.rmem_max/wmem_max allow). Returns the fd or a one-line reason.
[[nodiscard]] Result<int, std::string> OpenIpv4WorkerSocket(int buffer_bytes);
[[nodiscard]] Result<int, std::string> OpenIpv6DeviceSocket(int buffer_bytes);
// The receive buffer the kernel actually granted (it reports twice the usable size).
[[nodiscard]] int ReceiveBufferBytes(int fd) noexcept;

// Up to kBatchSize datagrams to the target, from one socket, sent by one sendmmsg.
class SendBatch {
 public:
  SendBatch(const sockaddr_storage& target, socklen_t target_length, size_t max_datagram);
  SendBatch(const SendBatch&) = delete;
  SendBatch& operator=(const SendBatch&) = delete;

  // Room for the next datagram, to be sent from `fd` with source address `source_ipv4` (host
  // byte order; 0 = the socket's own address). Flushes first when the batch is full or holds
  // another socket's datagrams. The span is valid until Commit.
  [[nodiscard]] std::span<std::byte> Begin(int fd, uint32_t source_ipv4) noexcept;
  // REQUIRES: a Begin before, size <= max_datagram.
  void Commit(size_t size) noexcept;
  // Sends what is queued. A datagram the kernel does not take after a short wait for buffer
  // space is dropped and counted, as a lossy network would (its exchange retransmits).
  void Flush() noexcept;

  [[nodiscard]] uint64_t send_errors() const noexcept { return send_errors_; }

 private:
  sockaddr_storage target_;
  socklen_t target_length_;
  size_t max_datagram_;
  int fd_ = -1;
  unsigned count_ = 0;
  uint64_t send_errors_ = 0;
  std::vector<std::byte> buffer_;
  std::array<iovec, kBatchSize> iov_{};
  std::array<mmsghdr, kBatchSize> msg_{};
  // One IP_PKTINFO control message per datagram.
  struct alignas(cmsghdr) Control {
    std::byte bytes[CMSG_SPACE(sizeof(in_pktinfo))];
  };
  std::array<Control, kBatchSize> control_{};
};

// One recvmmsg worth of datagrams with their source and (IPv4) destination addresses.
class ReceiveBatch {
 public:
  static constexpr size_t kMaxDatagram = 1280;  // larger replies are counted as malformed

  ReceiveBatch();
  ReceiveBatch(const ReceiveBatch&) = delete;
  ReceiveBatch& operator=(const ReceiveBatch&) = delete;

  // Receives what is queued on `fd` without blocking: the count, 0 when nothing is.
  [[nodiscard]] unsigned Receive(int fd) noexcept;

  struct Datagram {
    std::span<const std::byte> bytes;  ///< valid until the next Receive
    uint32_t destination_ipv4;         ///< host byte order; 0 for IPv6 or without IP_PKTINFO
    bool truncated;
    const sockaddr_storage* source;
  };
  // REQUIRES: i < the last Receive's count.
  [[nodiscard]] Datagram Get(unsigned i) const noexcept;

 private:
  std::vector<std::byte> buffer_;
  // mutable: CMSG_NXTHDR takes a non-const msghdr even to read.
  mutable std::array<mmsghdr, kBatchSize> msg_{};
  std::array<sockaddr_storage, kBatchSize> source_{};
  std::array<iovec, kBatchSize> iov_{};
  struct alignas(cmsghdr) Control {
    std::byte bytes[CMSG_SPACE(sizeof(in_pktinfo)) + 64];  // room for an unexpected extra
  };
  std::array<Control, kBatchSize> control_{};
};

// Whether `source` is `target` (address and port): replies from anywhere else are foreign.
[[nodiscard]] bool SameEndpoint(const sockaddr_storage& source,
                                const sockaddr_storage& target) noexcept;

}  // namespace coapgate::loadgen
