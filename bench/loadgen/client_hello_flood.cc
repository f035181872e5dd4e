#include "bench/loadgen/client_hello_flood.h"

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "bench/loadgen/monotonic_ns.h"
#include "common/check.h"

namespace coapgate::loadgen {
namespace {

// Big-endian writer over a fixed buffer; the hello's layout is fixed, so overflowing it is a
// bug of BuildHello.
class Writer {
 public:
  explicit Writer(std::span<uint8_t> out) noexcept : out_(out) {}
  void Put(uint64_t v, size_t width) noexcept {
    CHECK(size_ + width <= out_.size(), "flood ClientHello above kMaxHello");
    for (size_t k = width; k-- > 0;) out_[size_++] = static_cast<uint8_t>((v >> (8 * k)) & 0xff);
  }
  [[nodiscard]] size_t size() const noexcept { return size_; }

 private:
  std::span<uint8_t> out_;
  size_t size_ = 0;
};

constexpr size_t kRecordHeader = 13;
constexpr size_t kHandshakeHeader = 12;
constexpr uint8_t kContentHandshake = 22;
constexpr uint8_t kHelloVerifyRequest = 3;

// Reads what came back to `fd`, then closes it.
void CollectAndClose(int fd, FloodResult* r) noexcept {
  std::array<uint8_t, 512> buffer;
  for (int i = 0; i < 64; ++i) {
    const ssize_t n = recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (static_cast<size_t>(n) > kRecordHeader && buffer[0] == kContentHandshake &&
        buffer[kRecordHeader] == kHelloVerifyRequest) {
      ++r->hvr_received;
    } else {
      ++r->other_received;
    }
  }
  close(fd);
}

}  // namespace

size_t ClientHelloFlood::BuildHello(uint64_t n, bool forged_cookie, uint64_t (&random)[8],
                                    std::span<uint8_t, kMaxHello> out) noexcept {
  constexpr size_t kBody = 2 + 32 + 1 + 1 + 2 + 4 + 1 + 1 + 2 + 4;  // without a cookie
  const size_t body = kBody + (forged_cookie ? 32 : 0);
  Writer w(out);
  w.Put(kContentHandshake, 1);
  w.Put(0xfeff, 2);  // record version DTLS 1.0, as clients send their first hello
  w.Put(0, 2);       // epoch
  w.Put(n & 0xffffffffffff, 6);
  w.Put(kHandshakeHeader + body, 2);
  w.Put(1, 1);  // client_hello
  w.Put(body, 3);
  w.Put(0, 2);  // message_seq
  w.Put(0, 3);  // fragment_offset
  w.Put(body, 3);
  w.Put(0xfefd, 2);                                 // client_version DTLS 1.2
  for (int i = 0; i < 4; ++i) w.Put(random[i], 8);  // random
  w.Put(0, 1);                                      // no session id
  w.Put(forged_cookie ? 32 : 0, 1);
  for (int i = 4; forged_cookie && i < 8; ++i) w.Put(random[i], 8);
  w.Put(4, 2);
  w.Put(0xc0a8, 2);  // PSK-AES128-CCM-8
  w.Put(0x00ae, 2);  // PSK-AES128-CBC-SHA256
  w.Put(1, 1);
  w.Put(0, 1);  // null compression
  w.Put(4, 2);  // extensions: extended_master_secret
  w.Put(0x0017, 2);
  w.Put(0, 2);
  return w.size();
}

FloodResult ClientHelloFlood::Run(uint64_t deadline_ns, const std::atomic<bool>& stop) noexcept {
  FloodResult r;
  std::mt19937_64 random(std::random_device{}());
  std::array<int, kSockets> ring;
  ring.fill(-1);
  std::array<uint8_t, kMaxHello> hello;
  const uint64_t start = MonotonicNs();
  const double interval_ns = 1e9 / options_.rate;
  for (uint64_t i = 0; i < options_.count; ++i) {
    if (stop.load(std::memory_order_relaxed)) break;
    if (i % 32 == 0) {  // paced: never ahead of the schedule
      const uint64_t now = MonotonicNs();
      if (now >= deadline_ns) break;
      const auto due = start + static_cast<uint64_t>(static_cast<double>(i) * interval_ns);
      if (due > now) std::this_thread::sleep_for(std::chrono::nanoseconds(due - now));
    }
    int& fd = ring[i % kSockets];
    if (fd >= 0) CollectAndClose(fd, &r);
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(kFirstAddress + static_cast<uint32_t>(i % kAddresses));
    if (fd < 0 || bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) {
      ++r.socket_errors;
      if (fd >= 0) close(fd);
      fd = -1;
      continue;
    }
    uint64_t bytes[8];
    for (uint64_t& b : bytes) b = random();
    const size_t length =
        BuildHello(i, options_.forged_cookies && i % 2 == 1, bytes, std::span(hello));
    if (sendto(fd, hello.data(), length, 0, reinterpret_cast<const sockaddr*>(&target_),
               sizeof target_) < 0) {
      ++r.send_errors;
    } else {
      ++r.sent;
    }
    if (i % 10'000 == 9'999) {
      std::fprintf(stderr, "coapgate-loadgen: flood sent=%lu hvr=%lu\n", r.sent, r.hvr_received);
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the last HVRs
  for (int& fd : ring) {
    if (fd >= 0) CollectAndClose(fd, &r);
    fd = -1;
  }
  r.seconds = static_cast<double>(MonotonicNs() - start) / 1e9;
  return r;
}

}  // namespace coapgate::loadgen
