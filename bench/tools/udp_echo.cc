// udp_echo: the bare-echo ceiling E of bench/README.md#goals. N SO_REUSEPORT sockets on one address, one
// thread each; every thread loops recvmmsg (a batch) -> answer each well-formed CoAP CON with a
// piggybacked ACK 2.04 echoing its MID and token -> sendmmsg the answers. Nothing else: no
// dedup, no registry, no sink. coapgate's ingest rate is read as a fraction of this one.
//
// Usage: udp_echo --listen 127.0.0.1:PORT [--threads N] [--duration S]
// Prints "listening on ADDR:PORT" (the real port when 0 was asked) on stdout, then serves until
// SIGTERM/SIGINT (exit 0) or --duration seconds. Per-thread counts go to stderr at exit.
//
// Thread contract: each worker owns its socket and buffers; the only shared state is the stop
// flag. Signals are blocked in every thread and taken synchronously by main (sigtimedwait).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "codec/code.h"
#include "codec/encoder.h"
#include "codec/message.h"

namespace coapgate::bench {
namespace {

// One recvmmsg/sendmmsg batch: large enough to amortise the syscall over many datagrams,
// small enough that the buffers (64 x 2 KiB) stay in L2.
constexpr unsigned kBatch = 64;
// Larger than any datagram a CoAP client sends over UDP on this path (RFC 7252 §4.6 suggests
// 1152); longer ones arrive with MSG_TRUNC and are ignored.
constexpr size_t kMaxDatagram = 2048;
// 4-byte header + up to 8 token bytes: an ACK 2.04 without options or payload.
constexpr size_t kMaxAck = 16;
// How often a blocked worker wakes up to look at the stop flag (SO_RCVTIMEO): cheap, and
// bounds the shutdown delay.
constexpr int kWakeMs = 200;
// The safety stop when no signal comes: an echo left behind by a crashed script does not live
// forever.
constexpr unsigned kDefaultDurationS = 900;
constexpr unsigned kMaxDurationS = 3600;

std::atomic<bool> g_stop{false};

struct WorkerStats {
  uint64_t received = 0;
  uint64_t answered = 0;
  uint64_t ignored = 0;      // not a well-formed CON, or truncated
  uint64_t send_errors = 0;  // answers sendmmsg refused (dropped, not retried)
};

// Parses "a.b.c.d:port" or "[v6]:port". Returns the address and its length.
std::optional<std::pair<sockaddr_storage, socklen_t>> ParseEndpoint(const std::string& text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  std::string host = text.substr(0, colon);
  const std::string port_text = text.substr(colon + 1);
  char* end = nullptr;
  const unsigned long port = std::strtoul(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port > 65535) return std::nullopt;
  sockaddr_storage storage{};
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.c_str(), &a.sin6_addr) != 1) return std::nullopt;
    std::memcpy(&storage, &a, sizeof a);
    return std::pair{storage, socklen_t{sizeof a}};
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) return std::nullopt;
  std::memcpy(&storage, &a, sizeof a);
  return std::pair{storage, socklen_t{sizeof a}};
}

std::string FormatEndpoint(const sockaddr_storage& address) {
  char host[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET6) {
    sockaddr_in6 a;
    std::memcpy(&a, &address, sizeof a);
    inet_ntop(AF_INET6, &a.sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a.sin6_port));
  }
  sockaddr_in a;
  std::memcpy(&a, &address, sizeof a);
  inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
  return std::string(host) + ":" + std::to_string(ntohs(a.sin_port));
}

// Opens one SO_REUSEPORT socket bound to `address`; exits the process on failure (startup).
int OpenSocket(const sockaddr_storage& address, socklen_t length) {
  const int fd = socket(address.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    std::perror("udp_echo: socket");
    std::exit(1);
  }
  const int one = 1;
  // Ask for 4 MiB; the kernel caps it at net.core.rmem_max/wmem_max, which is fine.
  const int buffer = 4 << 20;
  const timeval wake{0, kWakeMs * 1000};
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wake, sizeof wake) != 0) {
    std::perror("udp_echo: setsockopt");
    std::exit(1);
  }
  sockaddr_storage a = address;
  if (bind(fd, reinterpret_cast<const sockaddr*>(&a), length) != 0) {
    std::perror("udp_echo: bind");
    std::exit(1);
  }
  return fd;
}

// The whole data path. Heap-allocated by the caller (about 150 KiB of buffers).
class EchoWorker {
 public:
  explicit EchoWorker(int fd) noexcept : fd_(fd) {}

  void Run() noexcept {
    for (unsigned i = 0; i < kBatch; ++i) {
      recv_iov_[i] = {recv_buf_[i].data(), kMaxDatagram};
      recv_msg_[i].msg_hdr.msg_iov = &recv_iov_[i];
      recv_msg_[i].msg_hdr.msg_iovlen = 1;
      recv_msg_[i].msg_hdr.msg_name = &peer_[i];
      send_msg_[i].msg_hdr.msg_iov = &send_iov_[i];
      send_msg_[i].msg_hdr.msg_iovlen = 1;
    }
    while (!g_stop.load(std::memory_order_relaxed)) {
      for (unsigned i = 0; i < kBatch; ++i) {
        recv_msg_[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
        recv_msg_[i].msg_hdr.msg_flags = 0;
      }
      // MSG_WAITFORONE: block (up to SO_RCVTIMEO) for the first datagram, then take whatever
      // else is already queued.
      const int n = recvmmsg(fd_, recv_msg_.data(), kBatch, MSG_WAITFORONE, nullptr);
      if (n <= 0) continue;  // EAGAIN (wake-up timer), EINTR
      Answer(static_cast<unsigned>(n));
    }
  }

  [[nodiscard]] const WorkerStats& stats() const noexcept { return stats_; }

 private:
  void Answer(unsigned n) noexcept {
    stats_.received += n;
    unsigned out = 0;
    for (unsigned i = 0; i < n; ++i) {
      const msghdr& in = recv_msg_[i].msg_hdr;
      if ((in.msg_flags & MSG_TRUNC) != 0) {
        ++stats_.ignored;
        continue;
      }
      const std::span<const std::byte> datagram(
          reinterpret_cast<const std::byte*>(recv_buf_[i].data()), recv_msg_[i].msg_len);
      const auto message = codec::ParseMessage(datagram);
      if (!message || !message->confirmable()) {
        ++stats_.ignored;
        continue;
      }
      const auto size = codec::EncodeMessage(codec::ResponseTo(*message, codec::code::kChanged, 0),
                                             std::span<std::byte>(ack_buf_[out]));
      if (!size) {
        ++stats_.ignored;
        continue;
      }
      send_iov_[out] = {ack_buf_[out].data(), *size};
      send_msg_[out].msg_hdr.msg_name = &peer_[i];
      send_msg_[out].msg_hdr.msg_namelen = in.msg_namelen;
      ++out;
    }
    unsigned done = 0;
    while (done < out) {
      const int sent = sendmmsg(fd_, send_msg_.data() + done, out - done, 0);
      if (sent < 0) {
        if (errno == EINTR) continue;
        // ENOBUFS, EPERM...: drop the datagram sendmmsg stopped at, go on with the rest.
        ++stats_.send_errors;
        ++done;
        continue;
      }
      done += static_cast<unsigned>(sent);
      stats_.answered += static_cast<unsigned>(sent);
    }
  }

  const int fd_;
  WorkerStats stats_;
  std::array<std::array<char, kMaxDatagram>, kBatch> recv_buf_;
  std::array<std::array<std::byte, kMaxAck>, kBatch> ack_buf_;
  std::array<sockaddr_storage, kBatch> peer_;
  std::array<iovec, kBatch> recv_iov_;
  std::array<iovec, kBatch> send_iov_;
  std::array<mmsghdr, kBatch> recv_msg_{};
  std::array<mmsghdr, kBatch> send_msg_{};
};

int Main(int argc, char** argv) {
  CLI::App app{"udp_echo: bare recvmmsg->sendmmsg CoAP ACK responder (the ceiling E)"};
  std::string listen;
  unsigned threads = 1;
  unsigned duration_s = kDefaultDurationS;
  app.add_option("--listen", listen, "address:port to serve, e.g. 127.0.0.1:0 or [::1]:5683")
      ->required();
  app.add_option("--threads", threads, "SO_REUSEPORT sockets, one thread each")
      ->check(CLI::Range(1u, 64u));
  app.add_option("--duration", duration_s, "exit 0 after this many seconds without a signal")
      ->check(CLI::Range(1u, kMaxDurationS));
  CLI11_PARSE(app, argc, argv);

  auto endpoint = ParseEndpoint(listen);
  if (!endpoint) {
    std::fprintf(stderr, "udp_echo: bad --listen '%s' (want a.b.c.d:port or [v6]:port)\n",
                 listen.c_str());
    return 2;
  }

  // Block the stop signals before any thread exists, so every thread inherits the mask and
  // main alone takes them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // The first socket fixes the port (when 0 was asked); the others join it via SO_REUSEPORT.
  std::vector<int> fds;
  fds.push_back(OpenSocket(endpoint->first, endpoint->second));
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof bound;
  getsockname(fds[0], reinterpret_cast<sockaddr*>(&bound), &bound_length);
  for (unsigned i = 1; i < threads; ++i) fds.push_back(OpenSocket(bound, bound_length));

  std::vector<std::unique_ptr<EchoWorker>> workers;
  std::vector<std::thread> running;
  for (const int fd : fds) {
    workers.push_back(std::make_unique<EchoWorker>(fd));
    running.emplace_back([w = workers.back().get()] { w->Run(); });
  }
  std::printf("listening on %s\n", FormatEndpoint(bound).c_str());
  std::fflush(stdout);

  const timespec limit{static_cast<time_t>(duration_s), 0};
  int signal_number = -1;
  for (;;) {
    signal_number = sigtimedwait(&stop_signals, nullptr, &limit);
    if (signal_number >= 0 || errno != EINTR) break;
  }
  g_stop.store(true);
  for (std::thread& t : running) t.join();

  WorkerStats total;
  for (size_t i = 0; i < workers.size(); ++i) {
    const WorkerStats& s = workers[i]->stats();
    std::fprintf(stderr,
                 "udp_echo: thread %zu received=%lu answered=%lu ignored=%lu send_errors=%lu\n", i,
                 s.received, s.answered, s.ignored, s.send_errors);
    total.received += s.received;
    total.answered += s.answered;
  }
  std::fprintf(stderr, "udp_echo: stopped by %s; received=%lu answered=%lu\n",
               signal_number >= 0 ? "signal" : "--duration", total.received, total.answered);
  for (const int fd : fds) close(fd);
  return 0;
}

}  // namespace
}  // namespace coapgate::bench

int main(int argc, char** argv) { return coapgate::bench::Main(argc, argv); }
