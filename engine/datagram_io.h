// DatagramIo: how a shard receives and sends UDP datagrams in batches. Two backends behave
// identically: io_uring with multishot recvmsg over a provided-buffer ring (UringIo) and
// recvmmsg/sendmmsg (RecvmmsgIo) for kernels or sandboxes without io_uring.
//
// Thread contract: one instance per shard, used only by that shard's thread.
// Lifetime: the datagrams Receive returns (bytes and peer) are valid until the next Receive.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "codec/result.h"

namespace coapgate::engine {

struct ReceivedDatagram {
  std::span<const std::byte> bytes;
  const sockaddr* peer;
  socklen_t peer_length;
  uint16_t socket;  ///< index into the sockets the backend was built with
  bool truncated;   ///< the datagram was larger than the receive buffer (MSG_TRUNC)
};

struct DatagramIoOptions {
  std::vector<int> sockets;   ///< bound, non-blocking UDP sockets (not owned)
  std::vector<int> wake_fds;  ///< eventfds that end a wait when written (not owned)
  size_t buffer_size;         ///< bytes per receive buffer; larger datagrams are truncated
};

class DatagramIo {
 public:
  virtual ~DatagramIo() = default;

  // Waits up to timeout_ms (0 = poll) until a datagram arrives or a wake fd is written, then
  // returns what arrived (possibly nothing). Wake fds are left for their owner to reset.
  [[nodiscard]] virtual std::span<const ReceivedDatagram> Receive(int timeout_ms) noexcept = 0;
  // Queues one reply (copied); sent by Flush, or earlier when the batch is full.
  virtual void Send(uint16_t socket, const sockaddr* peer, socklen_t peer_length,
                    std::span<const std::byte> bytes) noexcept = 0;
  virtual void Flush() noexcept = 0;
  // Replies the kernel refused so far (e.g. ENOBUFS); they are dropped, the device retries.
  [[nodiscard]] virtual uint64_t send_failures() const noexcept = 0;
  [[nodiscard]] virtual const char* name() const noexcept = 0;
};

inline constexpr size_t kMaxReplySize = 256;  ///< every reply coapgate sends fits in this

[[nodiscard]] Result<std::unique_ptr<DatagramIo>, std::string> MakeRecvmmsgIo(
    const DatagramIoOptions& options);
// Fails (with the reason) where io_uring or multishot recvmsg is unavailable, e.g. under a
// container's default seccomp profile or on kernels before 6.0.
[[nodiscard]] Result<std::unique_ptr<DatagramIo>, std::string> MakeUringIo(
    const DatagramIoOptions& options);

}  // namespace coapgate::engine
