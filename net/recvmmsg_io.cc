// RecvmmsgIo: the portable DatagramIo backend: poll(2) for readiness, recvmmsg(2) for up to
// kBatch datagrams per socket per call, sendmmsg(2) for the replies.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "net/datagram_io.h"

namespace coapgate::net {
namespace {

// Datagrams per recvmmsg/sendmmsg call: large enough to amortize the syscall (h2o and
// msquic use similar batches), small enough to keep one loop turn short.
constexpr size_t kBatch = 64;

class RecvmmsgIo final : public DatagramIo {
 public:
  explicit RecvmmsgIo(const DatagramIoOptions& o)
      : sockets_(o.sockets),
        buffer_size_(o.buffer_size),
        buffers_(kBatch * o.buffer_size),
        peers_(kBatch),
        controls_(kBatch * kPacketInfoSpace),
        iovecs_(kBatch),
        headers_(kBatch),
        replies_(kBatch),
        send_headers_(kBatch),
        receiving_(o.receive) {
    for (int fd : o.sockets) polls_.push_back({fd, POLLIN, 0});
    for (int fd : o.wake_fds) polls_.push_back({fd, POLLIN, 0});
    received_.reserve(kBatch * sockets_.size());
    for (size_t i = 0; i < kBatch; ++i) {
      iovecs_[i] = {buffers_.data() + i * buffer_size_, buffer_size_};
    }
  }

  std::span<const ReceivedDatagram> Receive(int timeout_ms) noexcept override {
    received_.clear();
    used_ = 0;
    if (!receiving_) {
      // The wake fds alone (they follow the sockets in polls_).
      if (timeout_ms != 0) {
        poll(polls_.data() + sockets_.size(), polls_.size() - sockets_.size(), timeout_ms);
      }
      return received_;
    }
    if (ReadAll() == 0 && timeout_ms != 0) {
      if (poll(polls_.data(), polls_.size(), timeout_ms) > 0) ReadAll();
    }
    return received_;
  }

  void Send(uint16_t socket, const sockaddr* peer, socklen_t peer_length,
            const LocalAddress& local, std::span<const std::byte> bytes) noexcept override {
    if (!ReplyFits(bytes, send_failures_)) return;
    if (pending_ == kBatch || (pending_ > 0 && pending_socket_ != socket)) Flush();
    pending_socket_ = socket;
    const size_t i = pending_++;
    replies_[i].Fill(peer, peer_length, local, bytes);
    send_headers_[i] = {};
    send_headers_[i].msg_hdr = replies_[i].header;
  }

  void Flush() noexcept override {
    size_t sent = 0;
    while (sent < pending_) {
      const int n = sendmmsg(sockets_[pending_socket_], send_headers_.data() + sent,
                             static_cast<unsigned>(pending_ - sent), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        // The first datagram of the rest was refused: drop it and go on with the others.
        ++send_failures_;
        ++sent;
        continue;
      }
      sent += static_cast<size_t>(n);
    }
    pending_ = 0;
  }

  // Reads happen inside Receive only, so nothing is in flight once the flag is down.
  void SetReceiving(bool on) noexcept override { receiving_ = on; }
  bool receive_stopped() const noexcept override { return !receiving_; }
  uint64_t send_failures() const noexcept override { return send_failures_; }
  const char* name() const noexcept override { return "recvmmsg"; }

 private:
  // One recvmmsg per socket into the shared batch; returns datagrams read. The first socket
  // asked rotates per call, so a socket with a deep queue cannot starve the others.
  size_t ReadAll() noexcept {
    size_t total = 0;
    const size_t first = next_first_socket_;
    next_first_socket_ = (next_first_socket_ + 1) % sockets_.size();
    for (size_t k = 0; k < sockets_.size() && used_ < kBatch; ++k) {
      const size_t s = (first + k) % sockets_.size();
      const size_t room = kBatch - used_;
      for (size_t i = used_; i < kBatch; ++i) {
        headers_[i] = {};
        headers_[i].msg_hdr.msg_name = &peers_[i];
        headers_[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
        headers_[i].msg_hdr.msg_iov = &iovecs_[i];
        headers_[i].msg_hdr.msg_iovlen = 1;
        headers_[i].msg_hdr.msg_control = controls_.data() + i * kPacketInfoSpace;
        headers_[i].msg_hdr.msg_controllen = kPacketInfoSpace;
      }
      const int n = recvmmsg(sockets_[s], headers_.data() + used_, static_cast<unsigned>(room),
                             MSG_DONTWAIT, nullptr);
      if (n <= 0) continue;
      for (int j = 0; j < n; ++j) {
        const size_t i = used_ + static_cast<size_t>(j);
        const msghdr& h = headers_[i].msg_hdr;
        const bool truncated = (h.msg_flags & MSG_TRUNC) != 0;
        const size_t length = truncated ? buffer_size_ : headers_[i].msg_len;
        received_.push_back({std::span<const std::byte>(buffers_.data() + i * buffer_size_, length),
                             reinterpret_cast<const sockaddr*>(&peers_[i]), h.msg_namelen,
                             static_cast<uint16_t>(s), truncated, ParsePacketInfo(h)});
      }
      used_ += static_cast<size_t>(n);
      total += static_cast<size_t>(n);
    }
    return total;
  }

  std::vector<int> sockets_;
  std::vector<pollfd> polls_;
  size_t buffer_size_;
  std::vector<std::byte> buffers_;
  std::vector<sockaddr_storage> peers_;
  std::vector<std::byte> controls_;  ///< kPacketInfoSpace per receive slot
  std::vector<iovec> iovecs_;
  std::vector<mmsghdr> headers_;
  std::vector<ReceivedDatagram> received_;
  size_t used_ = 0;
  size_t next_first_socket_ = 0;

  std::vector<ReplyMessage> replies_;  ///< never resized: headers point into them
  std::vector<mmsghdr> send_headers_;
  size_t pending_ = 0;
  uint16_t pending_socket_ = 0;
  uint64_t send_failures_ = 0;
  bool receiving_;
};

}  // namespace

Result<std::unique_ptr<DatagramIo>, std::string> MakeRecvmmsgIo(const DatagramIoOptions& options) {
  if (options.sockets.empty()) return Fail(std::string("no sockets"));
  return std::unique_ptr<DatagramIo>(new RecvmmsgIo(options));
}

}  // namespace coapgate::net
