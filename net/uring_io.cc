// UringIo: the io_uring DatagramIo backend. One multishot recvmsg per socket draws receive
// buffers from a provided-buffer ring, so an idle shard holds no per-read state and a busy
// one reaps many datagrams per wait; replies are sendmsg SQEs submitted together on Flush.
//
// liburing 2.3 (Debian 12) has no io_uring_setup_buf_ring: the buffer ring is mmap'ed and
// registered by hand, as liburing's examples/io_uring-udp.c does.
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "net/datagram_io.h"

namespace coapgate::net {
namespace {

constexpr unsigned kBufferCount = 4096;  ///< power of two (buffer ring requirement)
constexpr uint16_t kBufferGroup = 7;
constexpr unsigned kSendSlots = 1024;    ///< replies in flight in the kernel at most
constexpr unsigned kSqEntries = 2048;
constexpr unsigned kCqEntries = 16384;   ///< multishot floods the CQ; reaped every turn

enum class Kind : uint64_t { kRecv = 1, kWake = 2, kSend = 3, kCancel = 4, kProbe = 5 };
constexpr uint64_t Tag(Kind kind, uint64_t index) {
  return static_cast<uint64_t>(kind) << 32 | index;
}

class UringIo final : public DatagramIo {
 public:
  ~UringIo() override {
    if (ring_ready_) io_uring_queue_exit(&ring_);
    if (buffer_ring_ != nullptr) munmap(buffer_ring_, buffer_ring_bytes_);
  }

  Result<void, std::string> Init(const DatagramIoOptions& o) {
    sockets_ = o.sockets;
    wake_fds_ = o.wake_fds;
    rearm_.reserve(sockets_.size());
    armed_.assign(sockets_.size(), false);
    // Room for the io_uring_recvmsg_out header and the peer address before the control data,
    // which the kernel writes right after the name: rounded to 8 so that the cmsghdr there is
    // aligned (16 + 28 would put it at offset 44).
    name_length_ = (sizeof(sockaddr_in6) + 7) & ~size_t{7};
    // Each provided buffer holds io_uring_recvmsg_out, the peer address, the IP_PKTINFO
    // control message and the payload, in that order.
    // Rounded to a cache line so every buffer of the ring starts aligned.
    buffer_size_ = (sizeof(io_uring_recvmsg_out) + name_length_ + kPacketInfoSpace +
                    o.buffer_size + 63) & ~size_t{63};
    template_ = {};
    template_.msg_namelen = static_cast<socklen_t>(name_length_);
    template_.msg_controllen = kPacketInfoSpace;

    // REQUIRES: called on the thread that will drive the ring (the shard's). With
    // SINGLE_ISSUER + DEFER_TASKRUN (6.1+) the kernel's completion work runs only when that
    // thread waits for completions, in batches, instead of interrupting it.
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    params.cq_entries = kCqEntries;
    int rc = io_uring_queue_init_params(kSqEntries, &ring_, &params);
    if (rc == -EINVAL) {  // older kernels: no deferred task work
      params = {};
      params.flags = IORING_SETUP_CQSIZE;
      params.cq_entries = kCqEntries;
      rc = io_uring_queue_init_params(kSqEntries, &ring_, &params);
    }
    if (rc < 0) return Fail("io_uring_queue_init: " + std::string(std::strerror(-rc)));
    ring_ready_ = true;

    io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
    const bool has_ops = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_RECVMSG) &&
                         io_uring_opcode_supported(probe, IORING_OP_SENDMSG);
    if (probe != nullptr) io_uring_free_probe(probe);
    if (!has_ops) return Fail(std::string("io_uring lacks recvmsg/sendmsg"));

    buffers_.resize(static_cast<size_t>(kBufferCount) * buffer_size_);
    buffer_ring_bytes_ = kBufferCount * sizeof(io_uring_buf);
    void* mem = mmap(nullptr, buffer_ring_bytes_, PROT_READ | PROT_WRITE,
                     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) return Fail("mmap: " + std::string(std::strerror(errno)));
    buffer_ring_ = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(buffer_ring_);
    reg.ring_entries = kBufferCount;
    reg.bgid = kBufferGroup;
    rc = io_uring_register_buf_ring(&ring_, &reg, 0);
    if (rc < 0) return Fail("io_uring_register_buf_ring: " + std::string(std::strerror(-rc)));
    io_uring_buf_ring_init(buffer_ring_);
    for (unsigned i = 0; i < kBufferCount; ++i) AddBuffer(static_cast<uint16_t>(i), i);
    io_uring_buf_ring_advance(buffer_ring_, static_cast<int>(kBufferCount));

    send_slots_.resize(kSendSlots);
    for (unsigned i = 0; i < kSendSlots; ++i) free_send_.push_back(kSendSlots - 1 - i);
    receiving_ = o.receive;
    if (receiving_) {
      for (size_t s = 0; s < sockets_.size(); ++s) ArmRecv(s);
    }
    for (size_t w = 0; w < wake_fds_.size(); ++w) ArmWake(w);
    rc = io_uring_submit(&ring_);
    if (rc < 0) return Fail("io_uring_submit: " + std::string(std::strerror(-rc)));
    // A kernel without multishot recvmsg (< 6.0) fails the first SQE at once. Built not
    // receiving (a take-over's successor), the question is put to a socket of its own, which
    // no datagram reaches, rather than to the sockets it must not read yet.
    int probe_fd = -1;
    if (!receiving_) {
      probe_fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (probe_fd < 0) return Fail("socket: " + std::string(std::strerror(errno)));
      io_uring_sqe* question = GetSqe();
      io_uring_prep_recvmsg_multishot(question, probe_fd, &template_, MSG_TRUNC);
      question->flags |= IOSQE_BUFFER_SELECT;
      question->buf_group = kBufferGroup;
      io_uring_sqe_set_data64(question, Tag(Kind::kProbe, 0));
      io_uring_submit(&ring_);
    }
    io_uring_cqe* cqe = nullptr;
    const bool refused = io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr &&
                         cqe->res == -EINVAL &&
                         (static_cast<Kind>(cqe->user_data >> 32) == Kind::kRecv ||
                          static_cast<Kind>(cqe->user_data >> 32) == Kind::kProbe);
    if (probe_fd >= 0) {
      if (!refused) {
        io_uring_sqe* cancel = GetSqe();
        io_uring_prep_cancel64(cancel, Tag(Kind::kProbe, 0), 0);
        io_uring_sqe_set_data64(cancel, Tag(Kind::kProbe, 1));
        io_uring_submit(&ring_);
      }
      ::close(probe_fd);  // the ring keeps its own reference until the cancel completes
    }
    if (refused) return Fail(std::string("multishot recvmsg is not supported by this kernel"));
    received_.reserve(kBufferCount);
    return {};
  }

  std::span<const ReceivedDatagram> Receive(int timeout_ms) noexcept override {
    RecycleBuffers();
    // Re-arm receives that ended (typically -ENOBUFS) now that buffers are back in the ring.
    // A receive re-armed by SetReceiving(true) in between is not armed twice.
    if (receiving_) {
      for (size_t socket : rearm_) {
        if (!armed_[socket]) ArmRecv(socket);
      }
    }
    rearm_.clear();
    received_.clear();
    io_uring_cqe* cqe = nullptr;
    if (timeout_ms > 0) {
      __kernel_timespec ts{timeout_ms / 1000, (timeout_ms % 1000) * 1000000LL};
      io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    } else {
      // GETEVENTS as well: with deferred task work nothing completes without it.
      io_uring_submit_and_get_events(&ring_);
    }
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      Reap(cqe);
    }
    io_uring_cq_advance(&ring_, seen);
    return received_;
  }

  void Send(uint16_t socket, const sockaddr* peer, socklen_t peer_length,
            const LocalAddress& local, std::span<const std::byte> bytes) noexcept override {
    if (!ReplyFits(bytes, send_failures_)) return;
    io_uring_sqe* sqe = free_send_.empty() ? nullptr : io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      io_uring_submit(&ring_);  // makes SQ room; the kernel may also complete sends
      sqe = free_send_.empty() ? nullptr : io_uring_get_sqe(&ring_);
    }
    if (sqe == nullptr) {
      // All slots are with the kernel: send this one synchronously rather than drop it.
      ReplyMessage direct;
      direct.Fill(peer, peer_length, local, bytes);
      if (sendmsg(sockets_[socket], &direct.header, MSG_DONTWAIT) < 0) ++send_failures_;
      return;
    }
    const unsigned index = free_send_.back();
    free_send_.pop_back();
    ReplyMessage& slot = send_slots_[index];
    slot.Fill(peer, peer_length, local, bytes);
    io_uring_prep_sendmsg(sqe, sockets_[socket], &slot.header, 0);
    io_uring_sqe_set_data64(sqe, Tag(Kind::kSend, index));
  }

  void SetReceiving(bool on) noexcept override {
    if (on == receiving_) return;
    receiving_ = on;
    for (size_t s = 0; s < sockets_.size(); ++s) {
      if (on && !armed_[s]) {
        ArmRecv(s);
      } else if (!on && armed_[s]) {
        // The multishot receive ends with a final completion (no F_MORE), after any datagram
        // it had already taken; until then receive_stopped() stays false.
        io_uring_sqe* sqe = GetSqe();
        io_uring_prep_cancel64(sqe, Tag(Kind::kRecv, s), 0);
        io_uring_sqe_set_data64(sqe, Tag(Kind::kCancel, s));
      }
    }
    io_uring_submit(&ring_);
  }
  bool receive_stopped() const noexcept override {
    if (receiving_) return false;
    for (bool armed : armed_) {
      if (armed) return false;
    }
    return true;
  }

  void Flush() noexcept override {
    // A refused submit leaves the SQEs queued for the next one; count it so it shows.
    if (io_uring_submit(&ring_) < 0) ++send_failures_;
  }
  uint64_t send_failures() const noexcept override { return send_failures_; }
  const char* name() const noexcept override { return "io_uring"; }

 private:
  void AddBuffer(uint16_t id, unsigned offset) noexcept {
    io_uring_buf_ring_add(buffer_ring_, buffers_.data() + static_cast<size_t>(id) * buffer_size_,
                          static_cast<unsigned>(buffer_size_), id,
                          io_uring_buf_ring_mask(kBufferCount), static_cast<int>(offset));
  }

  // Buffers handed out by the previous Receive go back to the kernel now that the shard is
  // done with their datagrams.
  void RecycleBuffers() noexcept {
    if (in_use_.empty()) return;
    for (size_t i = 0; i < in_use_.size(); ++i) AddBuffer(in_use_[i], static_cast<unsigned>(i));
    io_uring_buf_ring_advance(buffer_ring_, static_cast<int>(in_use_.size()));
    in_use_.clear();
  }

  void ArmRecv(size_t socket) noexcept {
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_recvmsg_multishot(sqe, sockets_[socket], &template_, MSG_TRUNC);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = kBufferGroup;
    io_uring_sqe_set_data64(sqe, Tag(Kind::kRecv, socket));
    armed_[socket] = true;
  }

  void ArmWake(size_t index) noexcept {
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_poll_add(sqe, wake_fds_[index], POLLIN);
    io_uring_sqe_set_data64(sqe, Tag(Kind::kWake, index));
  }

  io_uring_sqe* GetSqe() noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (sqe == nullptr) {  // SQ full: submitting frees it
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  void Reap(const io_uring_cqe* cqe) noexcept {
    const auto kind = static_cast<Kind>(cqe->user_data >> 32);
    const auto index = static_cast<uint32_t>(cqe->user_data);
    switch (kind) {
      case Kind::kRecv: {
        if (cqe->flags & IORING_CQE_F_BUFFER) {
          const auto id = static_cast<uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
          in_use_.push_back(id);
          if (cqe->res > 0) Deliver(index, id, cqe->res);
        }
        // Multishot ends on errors, including running out of buffers (-ENOBUFS): re-arm at
        // the next Receive, after this batch's buffers went back to the ring.
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
          armed_[index] = false;
          rearm_.push_back(index);
        }
        break;
      }
      case Kind::kProbe:  // Init's question to a socket of its own, and its cancel
        break;
      case Kind::kCancel:
        // 0, or -ENOENT/-EALREADY when the receive had ended or is ending: nothing new. Any
        // other result would leave receive_stopped() false: counted, the take-over waits.
        if (cqe->res < 0 && cqe->res != -ENOENT && cqe->res != -EALREADY) ++cancel_failures_;
        break;
      case Kind::kWake:
        ArmWake(index);  // the eventfd's owner reads and resets it
        break;
      case Kind::kSend:
        if (cqe->res < 0) ++send_failures_;
        free_send_.push_back(index);
        break;
    }
  }

  void Deliver(uint32_t socket, uint16_t id, int length) noexcept {
    auto* buffer = buffers_.data() + static_cast<size_t>(id) * buffer_size_;
    io_uring_recvmsg_out* out = io_uring_recvmsg_validate(buffer, length, &template_);
    if (out == nullptr) return;
    const auto* payload = static_cast<const std::byte*>(io_uring_recvmsg_payload(out, &template_));
    const unsigned payload_length =
        io_uring_recvmsg_payload_length(out, length, &template_);
    // The control data as a msghdr view, for the parser both backends share.
    msghdr control{};
    control.msg_control = static_cast<unsigned char*>(io_uring_recvmsg_name(out)) + name_length_;
    control.msg_controllen = out->controllen;
    received_.push_back({std::span<const std::byte>(payload, payload_length),
                         static_cast<const sockaddr*>(io_uring_recvmsg_name(out)),
                         static_cast<socklen_t>(out->namelen), static_cast<uint16_t>(socket),
                         (out->flags & MSG_TRUNC) != 0, ParsePacketInfo(control)});
  }

  io_uring ring_{};
  bool ring_ready_ = false;
  std::vector<int> sockets_;
  std::vector<int> wake_fds_;
  std::vector<size_t> rearm_;  ///< sockets whose multishot receive ended
  std::vector<bool> armed_;    ///< per socket: a multishot receive is with the kernel
  bool receiving_ = true;      ///< SetReceiving
  uint64_t cancel_failures_ = 0;  ///< cancels the kernel refused (a debugger shows them)
  size_t name_length_ = 0;
  size_t buffer_size_ = 0;
  msghdr template_{};
  std::vector<std::byte> buffers_;
  io_uring_buf_ring* buffer_ring_ = nullptr;
  size_t buffer_ring_bytes_ = 0;
  std::vector<uint16_t> in_use_;
  std::vector<ReceivedDatagram> received_;
  std::vector<ReplyMessage> send_slots_;  ///< never resized: SQEs point into them
  std::vector<unsigned> free_send_;
  uint64_t send_failures_ = 0;
};

}  // namespace

Result<std::unique_ptr<DatagramIo>, std::string> MakeUringIo(const DatagramIoOptions& options) {
  if (options.sockets.empty()) return Fail(std::string("no sockets"));
  auto io = std::make_unique<UringIo>();
  if (auto ok = io->Init(options); !ok) return Fail(ok.error());
  return std::unique_ptr<DatagramIo>(std::move(io));
}

}  // namespace coapgate::net
