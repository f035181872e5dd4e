// DatagramIo: how a shard receives and sends UDP datagrams in batches. Two backends behave
// identically: io_uring with multishot recvmsg over a provided-buffer ring (UringIo) and
// recvmmsg/sendmmsg (RecvmmsgIo) for kernels or sandboxes without io_uring.
//
// Thread contract: one instance per shard, used only by that shard's thread.
// Lifetime: the datagrams Receive returns (bytes and peer) are valid until the next Receive.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "net/local_address.h"

namespace coapgate::net {

struct ReceivedDatagram {
  std::span<const std::byte> bytes;
  const sockaddr* peer;
  socklen_t peer_length;
  uint16_t socket;  ///< index into the sockets the backend was built with
  bool truncated;   ///< the datagram was larger than the receive buffer (MSG_TRUNC)
  LocalAddress local;
};

struct DatagramIoOptions {
  std::vector<int> sockets;   ///< bound, non-blocking UDP sockets (not owned)
  std::vector<int> wake_fds;  ///< eventfds that end a wait when written (not owned)
  size_t buffer_size;         ///< bytes per receive buffer; larger datagrams are truncated
  // False: built not receiving (SetReceiving(true) starts it), so that a process that took
  // sockets over reads nothing until its predecessor has committed to the hand-over.
  bool receive = true;
};

class DatagramIo {
 public:
  virtual ~DatagramIo() = default;

  // Waits up to timeout_ms (0 = poll) until a datagram arrives or a wake fd is written, then
  // returns what arrived (possibly nothing). Wake fds are left for their owner to reset.
  [[nodiscard]] virtual std::span<const ReceivedDatagram> Receive(int timeout_ms) noexcept = 0;
  // Queues one reply (copied), from `local` when it is known; sent by Flush, or earlier when
  // the batch is full.
  virtual void Send(uint16_t socket, const sockaddr* peer, socklen_t peer_length,
                    const LocalAddress& local, std::span<const std::byte> bytes) noexcept = 0;
  virtual void Flush() noexcept = 0;
  // Stops (false) or resumes (true) taking datagrams from the sockets; replies and wake fds
  // go on either way. Why: a process handing its sockets to a successor (engine/takeover_channel.h)
  // must leave what the kernel still queues in the sockets, where the successor reads it.
  // After SetReceiving(false), Receive still returns what the backend had already taken, then
  // nothing from the sockets.
  virtual void SetReceiving(bool on) noexcept = 0;
  // True once, after SetReceiving(false), no datagram can arrive any more: every datagram the
  // backend took has been returned by a Receive (io_uring: each socket's multishot receive has
  // reported its end).
  [[nodiscard]] virtual bool receive_stopped() const noexcept = 0;
  // Replies the kernel refused so far (e.g. ENOBUFS); they are dropped, the device retries.
  [[nodiscard]] virtual uint64_t send_failures() const noexcept = 0;
  [[nodiscard]] virtual const char* name() const noexcept = 0;
};

inline constexpr size_t kMaxReplySize = 256;  ///< every reply coapgate sends fits in this

// The check both backends' Send starts with: a reply above kMaxReplySize (which no caller
// should build) is counted in `send_failures` and dropped, never copied past a ReplyMessage.
[[nodiscard]] inline bool ReplyFits(std::span<const std::byte> bytes,
                                    uint64_t& send_failures) noexcept {
  if (bytes.size() <= kMaxReplySize) return true;
  ++send_failures;
  return false;
}

// Room for one IP_PKTINFO or IPV6_PKTINFO control message, received or sent.
inline constexpr size_t kPacketInfoSpace = CMSG_SPACE(sizeof(in6_pktinfo));

// Reads the destination address from a received message's control data.
[[nodiscard]] LocalAddress ParsePacketInfo(const msghdr& header) noexcept;
// One reply datagram with everything sendmsg(2) needs, in storage of its own: both backends
// keep arrays of these. `header` points into the object itself, so a ReplyMessage must not
// move between Fill and the send's completion.
struct ReplyMessage {
  sockaddr_storage peer;
  iovec iov;
  msghdr header;
  alignas(cmsghdr) std::byte control[kPacketInfoSpace];
  std::byte data[kMaxReplySize];

  // Copies the reply and makes it leave from `local` when that is known.
  // REQUIRES: bytes.size() <= kMaxReplySize, peer_length <= sizeof(sockaddr_storage).
  void Fill(const sockaddr* peer_address, socklen_t peer_length, const LocalAddress& local,
            std::span<const std::byte> bytes) noexcept;
};

// How a shard gets its DatagramIo: called once, on the shard's own thread (an io_uring belongs
// to the task that submits to it). The server passes MakeUringIo or MakeRecvmmsgIo; tests pass
// an in-memory fake (tests/engine/shard_test.cc).
using DatagramIoFactory =
    std::function<Result<std::unique_ptr<DatagramIo>, std::string>(const DatagramIoOptions&)>;

[[nodiscard]] Result<std::unique_ptr<DatagramIo>, std::string> MakeRecvmmsgIo(
    const DatagramIoOptions& options);
// Fails (with the reason) where io_uring or multishot recvmsg is unavailable, e.g. under a
// container's default seccomp profile or on kernels before 6.0.
[[nodiscard]] Result<std::unique_ptr<DatagramIo>, std::string> MakeUringIo(
    const DatagramIoOptions& options);

}  // namespace coapgate::net
