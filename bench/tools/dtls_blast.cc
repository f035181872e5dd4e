// dtls_blast: a DTLS 1.2 PSK (coaps://) load driver for loopback benchmarks (SPEC §7, §11,
// issue #5), on wolfSSL's client API with custom I/O. The DTLS sibling of coap_blast: same
// device addresses, request, options, histogram, progress line and JSON conventions.
//
// Modes:
//   --mode requests    each of N devices completes one full PSK handshake first (untimed, all
//                      at once, bounded by --setup-timeout), then keeps W confirmable requests
//                      (CON POST /?t=<topic>, coap_blast's request) in flight over its
//                      established session for D seconds: a closed loop like coap_blast's (slow
//                      start from 1, 2 s timeout, no retransmission). At the end every session
//                      is closed with close_notify, so the server's table empties.
//   --mode handshakes  K = --devices devices each loop for D seconds: a fresh socket (a new
//                      source port) -> a full PSK handshake (HelloVerifyRequest included) ->
//                      close_notify -> close -> again. Reports full handshakes per second.
//   --mode flood       a spoofed-ClientHello flood: --flood-count cookieless ClientHellos, each
//                      from a fresh source address in 127.64.0.0/10 and a fresh port, paced at
//                      --flood-rate per second (--flood-forged: every other one carries a forged
//                      32-byte cookie). The server should answer each with a HelloVerifyRequest
//                      and keep no state; HVRs are counted as they come back.
//   --make-devices N   prints a devices CSV (SPEC §3: iccid,imsi,ip,status,psk,psk_format) for N
//                      devices and exits: the same ICCIDs, IMSIs and addresses as
//                      make_devices.py, plus a PSK per device (16 letters and digits derived
//                      from --psk-seed and the index; or --psk KEY for all). Plain coap_blast
//                      works with the same file.
//
// Device i is one UDP socket bound to 127.0.0.(2+i):0 and connected to the target (Linux
// routes all of 127/8 to lo), with PSK identity = row i's ICCID and key = row i's psk
// (hex-decoded when psk_format is hex) from --devices-csv, or --psk for every device (the
// ICCIDs then are make_devices.py's). Suite: --cipher (wolfSSL name), PSK-AES128-CCM-8 by
// default (RFC 7252's mandatory suite). One CoAP message per record, one record per datagram;
// the client groups its handshake flights into one datagram each, as OpenSSL does.
//
// Usage: dtls_blast --target 127.0.0.1:PORT [--mode requests|handshakes|flood] [--devices N]
//            [--window W] [--duration S] [--threads T] [--payload BYTES] [--topic T]
//            [--devices-csv FILE | --psk KEY] [--cipher NAME] [--max-requests COUNT]
//            [--max-handshakes COUNT] [--setup-timeout S] [--handshake-timeout MS]
//            [--flood-count COUNT] [--flood-rate PER_S] [--flood-forged]
//        dtls_blast --make-devices N [--psk KEY | --psk-seed SEED]
//
// Output: one JSON object on stdout at the end; a progress line per second on stderr.
//
// Thread contract: devices are split across worker threads (device i -> thread i % T); a worker
// alone owns its devices' sockets, wolfSSL objects (and its own WOLFSSL_CTX), slots, histogram
// and counters. The only shared state is the stop flag, the published progress counters
// (relaxed atomics, one cache line per worker) and the ready/go/done handshake under a mutex.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/loadgen/dtls_keys.h"
#include "bench/loadgen/histogram.h"
#include "codec/code.h"
#include "codec/message.h"

namespace coapgate::bench {
namespace {

// recvmmsg/sendmmsg batch; also the largest window (a device refills its window in one call).
constexpr unsigned kBatch = 64;
constexpr unsigned kMaxWindow = kBatch;
// A device gets at most this many recvmmsg calls per wake-up.
constexpr unsigned kDrainRounds = 4;
// CoAP's ACK_TIMEOUT (RFC 7252 §4.8): past it a real client would retransmit.
constexpr uint64_t kTimeoutNs = 2'000'000'000;
// A handshake flight unanswered this long is retransmitted (RFC 6347 §4.2.4.1's initial 1 s).
constexpr uint64_t kRetransmitNs = 1'000'000'000;
// Timeouts are looked for this often; also the longest epoll_wait, so a stop is seen quickly.
constexpr uint64_t kScanNs = 50'000'000;
constexpr unsigned kMaxDurationS = 300;
constexpr unsigned kMaxPayload = 1024;
constexpr size_t kSeqOffset = 8;  // "d=NNN s=SSSSSSSSSS ": the sequence digits
constexpr size_t kSeqDigits = 10;
constexpr size_t kTokenLength = 4;
constexpr size_t kRecvBuffer = 2048;
constexpr size_t kMaxRecord = 2048;  // one encrypted request: header + nonce + tag + message
// The identities and addresses of make_devices.py.
constexpr uint64_t kIccidBase = 8988280666000000000ull;
constexpr uint64_t kImsiBase = 901405100000000ull;
constexpr unsigned kMaxDevices = 250;  // 127.0.0.2 .. 127.0.0.251
// Flood: sockets kept open so that HelloVerifyRequests can come back and be counted.
constexpr unsigned kFloodSockets = 256;
constexpr uint32_t kFloodAddressBase = (127u << 24) | (64u << 16);  // 127.64.0.0
constexpr uint32_t kFloodAddresses = 1u << 22;                      // .. 127.127.255.255

std::atomic<bool> g_stop{false};

uint64_t NowNs() noexcept {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

double CpuSeconds() noexcept {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

using coapgate::loadgen::LatencyHistogram;  // bench/loadgen/histogram.h

enum class Mode { kRequests, kHandshakes, kFlood };

struct Options {
  std::string target;
  std::string mode_name = "requests";
  Mode mode = Mode::kRequests;
  unsigned devices = 64;
  unsigned window = 4;
  unsigned duration_s = 10;
  unsigned threads = 1;
  unsigned payload = 48;
  std::string topic = "bench";
  std::string devices_csv;
  std::string psk;
  std::string cipher = "PSK-AES128-CCM-8";
  uint64_t max_requests = 1'000'000'000;
  uint64_t max_handshakes = 100'000'000;
  unsigned setup_timeout_s = 30;
  unsigned handshake_timeout_ms = 5000;
  uint64_t flood_count = 100'000;
  unsigned flood_rate = 20'000;
  bool flood_forged = false;
  unsigned make_devices = 0;
  uint64_t psk_seed = 0x636f61706761ull;  // "coapga"
};

struct Credential {
  std::string identity;  // the ICCID
  std::string key;       // raw key bytes
};

struct Counters {
  // requests
  uint64_t sent = 0;
  uint64_t answered = 0;
  uint64_t timeouts = 0;
  uint64_t unmatched = 0;
  uint64_t malformed = 0;  // decrypted, but not CoAP
  uint64_t send_errors = 0;
  uint64_t icmp_errors = 0;
  uint64_t rst = 0;
  uint64_t write_errors = 0;     // wolfSSL_write refused
  uint64_t sessions_lost = 0;    // an established session failed or got close_notify
  uint64_t lost_in_flight = 0;   // requests in flight on a lost session
  std::array<uint64_t, 256> codes{};
  // handshakes (both modes)
  uint64_t handshakes = 0;
  uint64_t handshake_failures = 0;  // wolfSSL gave up (an alert, a protocol error)
  uint64_t handshake_timeouts = 0;  // not complete after --handshake-timeout
  uint64_t retransmissions = 0;     // flights resent after 1 s of silence
  uint64_t socket_errors = 0;       // a fresh socket could not be opened
  uint64_t datagrams_sent = 0;      // every datagram handed to the kernel (handshakes too)
  uint64_t datagrams_received = 0;
  std::map<int, uint64_t> errors;   // wolfSSL error code -> count (failures only)
};

struct alignas(64) Progress {
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> answered{0};
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> handshakes{0};
  std::atomic<uint64_t> failures{0};
};

struct Slot {
  uint64_t sent_ns = 0;
  uint32_t token = 0;
  uint16_t mid = 0;
  bool busy = false;
  bool separate = false;
};

class Worker;

struct Conn {
  enum class State : uint8_t { kIdle, kHandshaking, kEstablished, kDead };

  Worker* worker = nullptr;
  unsigned device = 0;  // global index: address 127.0.0.(2+device)
  const Credential* credential = nullptr;
  int fd = -1;
  WOLFSSL* ssl = nullptr;
  State state = State::kIdle;
  uint32_t generation = 0;            // bumped by Close: stale datagrams are not fed on
  std::span<const std::byte> input;   // the datagram being fed to wolfSSL
  bool flight_sent = false;           // the send callback ran during the current call
  uint64_t handshake_start_ns = 0;
  uint64_t last_flight_ns = 0;
  // requests mode, as coap_blast's Device
  unsigned window = 1;
  unsigned busy = 0;
  uint32_t next_seq = 0;
  uint32_t token_base = 0;
  uint16_t mid_base = 0;
  std::vector<Slot> slots;
  std::vector<std::byte> body;
};

// coap_blast's request body: Uri-Query "t=<topic>", payload marker, "d=NNN s=" + filler.
std::vector<std::byte> RequestBody(const Options& options, unsigned device) {
  std::vector<std::byte> body;
  if (!options.topic.empty()) {
    const std::string value = "t=" + options.topic;  // Uri-Query (15), the first option
    auto nibble = [](size_t v) { return v < 13 ? v : v < 269 ? 13 : 14; };
    body.push_back(static_cast<std::byte>(nibble(15) << 4 | nibble(value.size())));
    body.push_back(static_cast<std::byte>(15 - 13));
    if (value.size() >= 269) {
      body.push_back(static_cast<std::byte>((value.size() - 269) >> 8));
      body.push_back(static_cast<std::byte>((value.size() - 269) & 0xff));
    } else if (value.size() >= 13) {
      body.push_back(static_cast<std::byte>(value.size() - 13));
    }
    for (char c : value) body.push_back(static_cast<std::byte>(c));
  }
  if (options.payload > 0) {
    body.push_back(codec::kPayloadMarker);
    char head[32];
    const size_t head_size =
        static_cast<size_t>(std::snprintf(head, sizeof head, "d=%03u s=%010u ", device, 0u));
    for (size_t i = 0; i < options.payload; ++i) {
      const char c = i < head_size ? head[i] : static_cast<char>('a' + (i - head_size) % 26);
      body.push_back(static_cast<std::byte>(c));
    }
  }
  return body;
}

// Device i's socket: bound to 127.0.0.(2+i), a fresh ephemeral port, connected to the target.
int OpenDeviceSocket(unsigned device, const sockaddr_in& target) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl((127u << 24) | (2 + device));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0 ||
      connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

class Worker {
 public:
  Worker(const Options& options, const sockaddr_in& target,
         std::vector<std::pair<unsigned, const Credential*>> devices, Progress* progress)
      : options_(options), target_(target), progress_(progress), conns_(devices.size()) {
    ctx_ = wolfSSL_CTX_new(wolfDTLSv1_2_client_method());
    if (ctx_ == nullptr || wolfSSL_CTX_set_cipher_list(ctx_, options.cipher.c_str()) !=
                               WOLFSSL_SUCCESS) {
      std::fprintf(stderr, "dtls_blast: cipher '%s' not available in this wolfSSL build\n",
                   options.cipher.c_str());
      std::exit(2);
    }
    wolfSSL_CTX_set_psk_client_callback(ctx_, &Worker::PskCallback);
    wolfSSL_CTX_SetIORecv(ctx_, &Worker::ReceiveCallback);
    wolfSSL_CTX_SetIOSend(ctx_, &Worker::SendCallback);
    wolfSSL_CTX_set_session_cache_mode(ctx_, WOLFSSL_SESS_CACHE_OFF);  // full handshakes only
    wolfSSL_CTX_set_group_messages(ctx_);  // a flight in one datagram, as OpenSSL sends it
    std::random_device entropy;
    for (size_t i = 0; i < devices.size(); ++i) {
      Conn& c = conns_[i];
      c.worker = this;
      c.device = devices[i].first;
      c.credential = devices[i].second;
      c.token_base = entropy();
      c.mid_base = static_cast<uint16_t>(entropy());
      if (options.mode == Mode::kRequests) {
        c.slots.resize(options.window);
        c.body = RequestBody(options, c.device);
      }
    }
    size_t largest = 0;
    for (const Conn& c : conns_) largest = std::max(largest, c.body.size());
    request_.resize(4 + kTokenLength + largest);
    send_buf_.resize(kBatch * kMaxRecord);
    recv_buf_.resize(kBatch * kRecvBuffer);
    for (unsigned i = 0; i < kBatch; ++i) {
      recv_iov_[i] = {&recv_buf_[i * kRecvBuffer], kRecvBuffer};
      recv_msg_[i].msg_hdr.msg_iov = &recv_iov_[i];
      recv_msg_[i].msg_hdr.msg_iovlen = 1;
      send_msg_[i].msg_hdr.msg_iov = &send_iov_[i];
      send_msg_[i].msg_hdr.msg_iovlen = 1;
    }
  }

  ~Worker() {
    for (Conn& c : conns_) Close(c, false);
    if (epoll_ >= 0) close(epoll_);
    wolfSSL_CTX_free(ctx_);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // requests mode, phase 1: every device handshakes once, until all are done or `deadline_ns`.
  void Setup(uint64_t deadline_ns) noexcept {
    OpenEpoll();
    for (Conn& c : conns_) StartHandshake(c, NowNs());
    uint64_t next_scan = NowNs() + kScanNs;
    while (Handshaking() > 0) {
      const uint64_t now = NowNs();
      if (now >= deadline_ns || g_stop.load(std::memory_order_relaxed)) break;
      if (now >= next_scan) {
        Scan(now);
        next_scan = now + kScanNs;
      }
      Wait(std::min(next_scan, deadline_ns) - now);
      Publish();
    }
    for (Conn& c : conns_) {
      if (c.state == Conn::State::kHandshaking) {  // not done by the deadline
        ++counters_.handshake_timeouts;
        Close(c, false);
      } else if (c.state == Conn::State::kEstablished) {
        ++established_;
      }
    }
    Publish();
  }

  // requests mode, phase 2: the closed loop over the established sessions until `end_ns`.
  void Load(uint64_t end_ns) noexcept {
    end_ns_ = end_ns;
    loading_ = true;
    for (Conn& c : conns_) Refill(c);
    uint64_t next_scan = NowNs() + kScanNs;
    for (;;) {
      const uint64_t now = NowNs();
      if (now >= end_ns || g_stop.load(std::memory_order_relaxed)) break;
      if (counters_.sent >= max_sent_ && InFlight() == 0) break;
      if (now >= next_scan) {
        Scan(now);
        next_scan = now + kScanNs;
      }
      Wait(std::min(next_scan, end_ns) - now);
      Publish();
    }
    stop_ns_ = NowNs();
    in_flight_at_stop_ = InFlight();
    for (Conn& c : conns_) Close(c, true);  // close_notify: the server frees the session
    Publish();
  }

  // handshakes mode: handshake -> close_notify -> new port -> again, until `end_ns`.
  void Churn(uint64_t end_ns) noexcept {
    end_ns_ = end_ns;
    OpenEpoll();
    for (Conn& c : conns_) StartHandshake(c, NowNs());
    uint64_t next_scan = NowNs() + kScanNs;
    for (;;) {
      const uint64_t now = NowNs();
      if (now >= end_ns || g_stop.load(std::memory_order_relaxed)) break;
      if (counters_.handshakes >= max_handshakes_ && Handshaking() == 0) break;
      if (now >= next_scan) {
        Scan(now);
        next_scan = now + kScanNs;
      }
      Wait(std::min(next_scan, end_ns) - now);
      Publish();
    }
    stop_ns_ = NowNs();
    in_flight_at_stop_ = Handshaking();
    for (Conn& c : conns_) Close(c, true);
    Publish();
  }

  void set_max_sent(uint64_t n) noexcept { max_sent_ = n; }
  void set_max_handshakes(uint64_t n) noexcept { max_handshakes_ = n; }
  [[nodiscard]] const Counters& counters() const noexcept { return counters_; }
  [[nodiscard]] const LatencyHistogram& latency() const noexcept { return latency_; }
  [[nodiscard]] const LatencyHistogram& handshake_latency() const noexcept {
    return handshake_latency_;
  }
  [[nodiscard]] uint64_t stop_ns() const noexcept { return stop_ns_; }
  [[nodiscard]] uint64_t in_flight_at_stop() const noexcept { return in_flight_at_stop_; }
  [[nodiscard]] unsigned established() const noexcept { return established_; }

 private:
  void OpenEpoll() noexcept {
    if (epoll_ >= 0) return;
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) {
      std::perror("dtls_blast: epoll_create1");
      std::abort();
    }
  }

  [[nodiscard]] uint64_t InFlight() const noexcept {
    uint64_t n = 0;
    for (const Conn& c : conns_) n += c.busy;
    return n;
  }
  [[nodiscard]] unsigned Handshaking() const noexcept {
    unsigned n = 0;
    for (const Conn& c : conns_) n += c.state == Conn::State::kHandshaking;
    return n;
  }

  void Publish() noexcept {
    progress_->sent.store(counters_.sent, std::memory_order_relaxed);
    progress_->answered.store(counters_.answered, std::memory_order_relaxed);
    progress_->timeouts.store(counters_.timeouts, std::memory_order_relaxed);
    progress_->handshakes.store(counters_.handshakes, std::memory_order_relaxed);
    progress_->failures.store(
        counters_.handshake_failures + counters_.handshake_timeouts, std::memory_order_relaxed);
  }

  void Wait(uint64_t wait_ns) noexcept {
    std::array<epoll_event, 256> events;
    const int wait_ms = static_cast<int>((wait_ns + 999'999) / 1'000'000);
    const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), wait_ms);
    for (int i = 0; i < n; ++i) {
      Conn& c = conns_[events[static_cast<size_t>(i)].data.u32];
      if (c.fd < 0) continue;
      Drain(c);
      if (c.state == Conn::State::kEstablished) Refill(c);
    }
  }

  // A fresh socket and WOLFSSL for `c`; sends its ClientHello. On failure `c` stays idle and
  // the next scan tries again (handshakes mode) or it counts as failed (setup).
  void StartHandshake(Conn& c, uint64_t now) noexcept {
    c.fd = OpenDeviceSocket(c.device, target_);
    if (c.fd < 0) {
      ++counters_.socket_errors;
      c.state = options_.mode == Mode::kHandshakes ? Conn::State::kIdle : Conn::State::kDead;
      return;
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u32 = static_cast<uint32_t>(&c - conns_.data());
    c.ssl = wolfSSL_new(ctx_);
    if (c.ssl == nullptr || epoll_ctl(epoll_, EPOLL_CTL_ADD, c.fd, &event) != 0) {
      ++counters_.socket_errors;
      Close(c, false);
      return;
    }
    wolfSSL_SetIOReadCtx(c.ssl, &c);
    wolfSSL_SetIOWriteCtx(c.ssl, &c);
    wolfSSL_dtls_set_using_nonblock(c.ssl, 1);
    c.state = Conn::State::kHandshaking;
    c.handshake_start_ns = now;
    c.last_flight_ns = now;
    Advance(c, now);
  }

  // Runs the handshake as far as the datagram in c.input (if any) allows.
  void Advance(Conn& c, uint64_t now) noexcept {
    c.flight_sent = false;
    const int r = wolfSSL_connect(c.ssl);
    c.input = {};
    if (c.flight_sent) c.last_flight_ns = now;
    if (r == WOLFSSL_SUCCESS) {
      OnConnected(c, now);
      return;
    }
    const int e = wolfSSL_get_error(c.ssl, r);
    if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE) return;
    ++counters_.handshake_failures;
    ++counters_.errors[e];
    Close(c, false);
  }

  void OnConnected(Conn& c, uint64_t now) noexcept {
    ++counters_.handshakes;
    handshake_latency_.Record(now - c.handshake_start_ns);
    c.state = Conn::State::kEstablished;
    if (options_.mode == Mode::kRequests) return;
    Close(c, true);  // close_notify, then a new source port
    if (now < end_ns_ && counters_.handshakes < max_handshakes_ &&
        !g_stop.load(std::memory_order_relaxed)) {
      StartHandshake(c, now);
    }
  }

  // Frees `c`'s WOLFSSL and socket; an established session first says close_notify.
  void Close(Conn& c, bool notify) noexcept {
    if (c.ssl != nullptr) {
      if (notify && c.state == Conn::State::kEstablished) wolfSSL_shutdown(c.ssl);
      wolfSSL_free(c.ssl);
      c.ssl = nullptr;
    }
    if (c.fd >= 0) close(c.fd);  // also leaves the epoll set
    c.fd = -1;
    c.input = {};
    c.state = options_.mode == Mode::kHandshakes ? Conn::State::kIdle : Conn::State::kDead;
    ++c.generation;
    for (Slot& s : c.slots) s.busy = false;
    c.busy = 0;
  }

  void Drain(Conn& c) noexcept {
    const uint32_t generation = c.generation;
    for (unsigned round = 0; round < kDrainRounds; ++round) {
      const int n = recvmmsg(c.fd, recv_msg_.data(), kBatch, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == ECONNREFUSED) {
          ++counters_.icmp_errors;
          continue;
        }
        return;
      }
      const uint64_t now = NowNs();
      counters_.datagrams_received += static_cast<uint64_t>(n);
      for (int i = 0; i < n && c.generation == generation; ++i) {
        const mmsghdr& m = recv_msg_[static_cast<size_t>(i)];
        Feed(c, {static_cast<const std::byte*>(m.msg_hdr.msg_iov->iov_base), m.msg_len}, now);
      }
      if (c.generation != generation || static_cast<unsigned>(n) < kBatch) return;
    }
  }

  void Feed(Conn& c, std::span<const std::byte> datagram, uint64_t now) noexcept {
    c.input = datagram;
    if (c.state == Conn::State::kHandshaking) {
      Advance(c, now);
      return;
    }
    if (c.state != Conn::State::kEstablished) {
      c.input = {};
      return;
    }
    std::array<std::byte, kRecvBuffer> plain;
    for (;;) {
      const int n = wolfSSL_read(c.ssl, plain.data(), static_cast<int>(plain.size()));
      if (n > 0) {
        OnResponse(c, std::span(plain).first(static_cast<size_t>(n)), now);
        continue;
      }
      const int e = wolfSSL_get_error(c.ssl, n);
      if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE) break;
      // close_notify from the server, or a fatal error: the session is gone.
      ++counters_.sessions_lost;
      ++counters_.errors[e];
      counters_.lost_in_flight += c.busy;
      Close(c, false);
      return;
    }
    c.input = {};
  }

  void OnResponse(Conn& c, std::span<const std::byte> datagram, uint64_t now) noexcept {
    const auto message = codec::ParseMessage(datagram);
    if (!message) {
      ++counters_.malformed;
      return;
    }
    uint32_t token = 0;
    const bool has_token = message->token.size() == kTokenLength;
    if (has_token) std::memcpy(&token, message->token.data(), kTokenLength);
    const auto type = message->type;
    for (Slot& s : c.slots) {
      if (!s.busy) continue;
      if (type == codec::MessageType::kAcknowledgement || type == codec::MessageType::kReset) {
        if (s.mid != message->message_id) continue;
        if (type == codec::MessageType::kReset) {
          ++counters_.rst;
        } else if (message->code == codec::code::kEmpty) {
          s.separate = true;
          return;
        } else if (!has_token || s.token != token) {
          continue;
        } else {
          ++counters_.codes[message->code];
        }
      } else {
        if (!has_token || s.token != token || !s.separate) continue;
        ++counters_.codes[message->code];
        if (type == codec::MessageType::kConfirmable) AckSeparate(c, message->message_id);
      }
      s.busy = false;
      --c.busy;
      if (c.window < c.slots.size()) ++c.window;
      ++counters_.answered;
      latency_.Record(now - s.sent_ns);
      return;
    }
    ++counters_.unmatched;
  }

  void AckSeparate(Conn& c, uint16_t mid) noexcept {
    const std::array<uint8_t, 4> ack = {0x60, 0x00, static_cast<uint8_t>(mid >> 8),
                                        static_cast<uint8_t>(mid & 0xff)};
    if (wolfSSL_write(c.ssl, ack.data(), static_cast<int>(ack.size())) <= 0) {
      ++counters_.write_errors;
    }
  }

  // Encrypts a request for every free slot the window allows (each wolfSSL_write is one record,
  // which the send callback queues) and sends them in one sendmmsg.
  void Refill(Conn& c) noexcept {
    if (!loading_ || g_stop.load(std::memory_order_relaxed) ||
        c.state != Conn::State::kEstablished) {
      return;
    }
    std::array<uint16_t, kBatch> slot_of;
    unsigned n = 0;
    batch_size_ = 0;
    batching_ = true;
    for (uint16_t s = 0; s < c.slots.size() && c.busy + n < c.window &&
                         counters_.sent + n < max_sent_;
         ++s) {
      if (c.slots[s].busy) continue;
      const uint32_t seq = c.next_seq + n;
      const uint16_t mid = static_cast<uint16_t>(c.mid_base + seq);
      const uint32_t token = c.token_base + seq;
      std::byte* out = request_.data();
      out[0] = static_cast<std::byte>(0x40 | kTokenLength);  // CON
      out[1] = static_cast<std::byte>(codec::code::kPost);
      out[2] = static_cast<std::byte>(mid >> 8);
      out[3] = static_cast<std::byte>(mid & 0xff);
      std::memcpy(out + 4, &token, kTokenLength);
      std::memcpy(out + 4 + kTokenLength, c.body.data(), c.body.size());
      PatchSequence(c, seq, out + 4 + kTokenLength);
      const int size = static_cast<int>(4 + kTokenLength + c.body.size());
      const size_t before = batch_size_;
      if (wolfSSL_write(c.ssl, out, size) != size || batch_size_ != before + 1) {
        ++counters_.write_errors;  // (a record that did not reach the batch is simply lost)
        break;
      }
      c.slots[s].mid = mid;
      c.slots[s].token = token;
      slot_of[n++] = s;
    }
    batching_ = false;
    if (n == 0) return;
    const uint64_t now = NowNs();
    int sent = sendmmsg(c.fd, send_msg_.data(), n, 0);
    if (sent < 0) {
      if (errno == ECONNREFUSED) {
        ++counters_.icmp_errors;
      } else if (errno != EAGAIN && errno != EINTR) {
        ++counters_.send_errors;
      }
      sent = 0;  // the records are lost (DTLS tolerates the gap); the slots stay free
    }
    for (int i = 0; i < sent; ++i) {
      Slot& slot = c.slots[slot_of[static_cast<size_t>(i)]];
      slot.busy = true;
      slot.separate = false;
      slot.sent_ns = now;
    }
    c.next_seq += n;  // unsent ones too: their sequence numbers are in the payloads
    c.busy += static_cast<unsigned>(sent);
    counters_.sent += static_cast<uint64_t>(sent);
    counters_.datagrams_sent += static_cast<uint64_t>(sent);
  }

  void PatchSequence(const Conn& c, uint32_t seq, std::byte* body) const noexcept {
    if (options_.payload == 0) return;
    const size_t payload_start = c.body.size() - options_.payload;
    char digits[kSeqDigits];
    for (size_t i = kSeqDigits; i-- > 0; seq /= 10) digits[i] = static_cast<char>('0' + seq % 10);
    for (size_t i = 0; i < kSeqDigits && kSeqOffset + i < options_.payload; ++i) {
      body[payload_start + kSeqOffset + i] = static_cast<std::byte>(digits[i]);
    }
  }

  // Request timeouts, handshake retransmissions and timeouts, restarts of idle devices.
  void Scan(uint64_t now) noexcept {
    for (Conn& c : conns_) {
      switch (c.state) {
        case Conn::State::kEstablished:
          for (Slot& s : c.slots) {
            if (s.busy && now - s.sent_ns >= kTimeoutNs) {
              s.busy = false;
              --c.busy;
              ++counters_.timeouts;
            }
          }
          Refill(c);
          break;
        case Conn::State::kHandshaking:
          if (now - c.handshake_start_ns >= uint64_t{options_.handshake_timeout_ms} * 1'000'000) {
            ++counters_.handshake_timeouts;
            Close(c, false);
            if (options_.mode == Mode::kHandshakes) Restart(c, now);
          } else if (now - c.last_flight_ns >= kRetransmitNs) {
            ++counters_.retransmissions;
            c.last_flight_ns = now;
            if (wolfSSL_dtls_got_timeout(c.ssl) != WOLFSSL_SUCCESS) {
              ++counters_.handshake_failures;
              ++counters_.errors[wolfSSL_get_error(c.ssl, WOLFSSL_FATAL_ERROR)];
              Close(c, false);
              if (options_.mode == Mode::kHandshakes) Restart(c, now);
            }
          }
          break;
        case Conn::State::kIdle:
          if (options_.mode == Mode::kHandshakes) Restart(c, now);
          break;
        case Conn::State::kDead:
          break;
      }
    }
  }

  void Restart(Conn& c, uint64_t now) noexcept {
    if (now < end_ns_ && counters_.handshakes < max_handshakes_ &&
        !g_stop.load(std::memory_order_relaxed)) {
      StartHandshake(c, now);
    }
  }

  // wolfSSL custom I/O: the datagram being fed, once; then "would block".
  static int ReceiveCallback(WOLFSSL*, char* buffer, int size, void* context) noexcept {
    auto* c = static_cast<Conn*>(context);
    if (c->input.empty()) return WOLFSSL_CBIO_ERR_WANT_READ;
    const size_t n = std::min(c->input.size(), static_cast<size_t>(size));
    std::memcpy(buffer, c->input.data(), n);
    c->input = {};
    return static_cast<int>(n);
  }

  // Inside Refill: queued for Refill's sendmmsg. Otherwise (handshake flights, close_notify,
  // empty ACKs) sent at once. A failed send is a lost datagram, never an error to wolfSSL.
  static int SendCallback(WOLFSSL*, char* buffer, int size, void* context) noexcept {
    auto* c = static_cast<Conn*>(context);
    Worker* w = c->worker;
    c->flight_sent = true;
    if (w->batching_ && w->batch_size_ < kBatch && static_cast<size_t>(size) <= kMaxRecord) {
      std::byte* slot = &w->send_buf_[w->batch_size_ * kMaxRecord];
      std::memcpy(slot, buffer, static_cast<size_t>(size));
      w->send_iov_[w->batch_size_] = {slot, static_cast<size_t>(size)};
      ++w->batch_size_;
      return size;
    }
    if (send(c->fd, buffer, static_cast<size_t>(size), MSG_DONTWAIT) < 0) {
      if (errno == ECONNREFUSED) {
        ++w->counters_.icmp_errors;
      } else {
        ++w->counters_.send_errors;
      }
    } else {
      ++w->counters_.datagrams_sent;
    }
    return size;
  }

  static unsigned int PskCallback(WOLFSSL* ssl, const char*, char* identity,
                                  unsigned int identity_max, unsigned char* key,
                                  unsigned int key_max) noexcept {
    const auto* c = static_cast<const Conn*>(wolfSSL_GetIOReadCtx(ssl));
    const Credential& cred = *c->credential;
    if (cred.identity.size() + 1 > identity_max || cred.key.size() > key_max) return 0;
    std::memcpy(identity, cred.identity.c_str(), cred.identity.size() + 1);
    std::memcpy(key, cred.key.data(), cred.key.size());
    return static_cast<unsigned int>(cred.key.size());
  }

  const Options& options_;
  const sockaddr_in target_;
  Progress* const progress_;
  WOLFSSL_CTX* ctx_ = nullptr;
  std::vector<Conn> conns_;  // never resized: wolfSSL holds pointers into it
  int epoll_ = -1;
  uint64_t end_ns_ = 0;
  uint64_t stop_ns_ = 0;
  uint64_t max_sent_ = UINT64_MAX;
  uint64_t max_handshakes_ = UINT64_MAX;
  uint64_t in_flight_at_stop_ = 0;
  unsigned established_ = 0;
  Counters counters_;
  LatencyHistogram latency_;
  LatencyHistogram handshake_latency_;
  std::vector<std::byte> request_;
  bool loading_ = false;  // requests mode, phase 2: Refill sends
  bool batching_ = false;
  size_t batch_size_ = 0;
  std::vector<std::byte> send_buf_;
  std::vector<std::byte> recv_buf_;
  std::array<iovec, kBatch> send_iov_{};
  std::array<iovec, kBatch> recv_iov_{};
  std::array<mmsghdr, kBatch> send_msg_{};
  std::array<mmsghdr, kBatch> recv_msg_{};
};

// ---------------------------------------------------------------------------------------
// Flood: hand-built cookieless ClientHellos (as a spoofer sends them) from fresh addresses.

std::vector<uint8_t> FloodHello(uint64_t n, bool forged_cookie, std::mt19937_64& random) {
  std::vector<uint8_t> body;
  auto put = [&](uint64_t v, size_t w) {
    for (size_t k = w; k-- > 0;) body.push_back(static_cast<uint8_t>((v >> (8 * k)) & 0xff));
  };
  put(0xfefd, 2);                                      // client_version DTLS 1.2
  for (int i = 0; i < 4; ++i) put(random(), 8);        // random
  put(0, 1);                                           // no session id
  put(forged_cookie ? 32 : 0, 1);
  for (int i = 0; forged_cookie && i < 4; ++i) put(random(), 8);
  put(4, 2);
  put(0xc0a8, 2);  // PSK-AES128-CCM-8
  put(0x00ae, 2);  // PSK-AES128-CBC-SHA256
  put(1, 1);
  put(0, 1);  // null compression
  put(4, 2);  // extensions: extended_master_secret
  put(0x0017, 2);
  put(0, 2);
  std::vector<uint8_t> d;
  auto put_d = [&](uint64_t v, size_t w) {
    for (size_t k = w; k-- > 0;) d.push_back(static_cast<uint8_t>((v >> (8 * k)) & 0xff));
  };
  put_d(22, 1);      // handshake
  put_d(0xfeff, 2);  // record version DTLS 1.0, as clients send their first hello
  put_d(0, 2);       // epoch
  put_d(n & 0xffffffffffff, 6);
  put_d(12 + body.size(), 2);
  put_d(1, 1);  // client_hello
  put_d(body.size(), 3);
  put_d(0, 2);  // message_seq
  put_d(0, 3);  // fragment_offset
  put_d(body.size(), 3);
  d.insert(d.end(), body.begin(), body.end());
  return d;
}

struct FloodResult {
  uint64_t sent = 0;
  uint64_t hvr = 0;
  uint64_t other = 0;
  uint64_t socket_errors = 0;
  uint64_t send_errors = 0;
  double seconds = 0;
};

// Reads what came back to `fd` (HVRs: handshake record, message type 3), then closes it.
void CollectAndClose(int fd, FloodResult* r) {
  std::array<uint8_t, 512> buffer;
  for (int i = 0; i < 64; ++i) {
    const ssize_t n = recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (n > 13 && buffer[0] == 22 && buffer[13] == 3) {
      ++r->hvr;
    } else {
      ++r->other;
    }
  }
  close(fd);
}

FloodResult RunFlood(const Options& options, const sockaddr_in& target) {
  FloodResult r;
  std::mt19937_64 random(std::random_device{}());
  std::array<int, kFloodSockets> ring;
  ring.fill(-1);
  const uint64_t start = NowNs();
  const uint64_t end = start + uint64_t{options.duration_s} * 1'000'000'000;
  const double interval_ns = 1e9 / options.flood_rate;
  for (uint64_t i = 0; i < options.flood_count; ++i) {
    if (g_stop.load(std::memory_order_relaxed)) break;
    if (i % 32 == 0) {  // pace: never ahead of the schedule
      const uint64_t now = NowNs();
      if (now >= end) break;
      const auto due = start + static_cast<uint64_t>(static_cast<double>(i) * interval_ns);
      if (due > now) std::this_thread::sleep_for(std::chrono::nanoseconds(due - now));
    }
    int& fd = ring[i % kFloodSockets];
    if (fd >= 0) CollectAndClose(fd, &r);
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(kFloodAddressBase + static_cast<uint32_t>(i % kFloodAddresses));
    if (fd < 0 || bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) {
      ++r.socket_errors;
      if (fd >= 0) close(fd);
      fd = -1;
      continue;
    }
    const std::vector<uint8_t> hello = FloodHello(i, options.flood_forged && i % 2 == 1, random);
    if (sendto(fd, hello.data(), hello.size(), 0, reinterpret_cast<const sockaddr*>(&target),
               sizeof target) < 0) {
      ++r.send_errors;
    } else {
      ++r.sent;
    }
    if (i % 10'000 == 9'999) {
      std::fprintf(stderr, "dtls_blast: flood sent=%lu hvr=%lu\n", r.sent, r.hvr);
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the last HVRs
  for (int& fd : ring) {
    if (fd >= 0) CollectAndClose(fd, &r);
    fd = -1;
  }
  r.seconds = static_cast<double>(NowNs() - start) / 1e9;
  return r;
}

// ---------------------------------------------------------------------------------------
// Devices and their keys

uint64_t SplitMix64(uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// 16 letters and digits: a bootstrap-style PSK (SPEC §6: printable, no commas, <= 19 chars).
std::string GeneratedKey(uint64_t seed, unsigned device) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string key;
  uint64_t state = SplitMix64(seed ^ (uint64_t{device} << 32));
  for (int i = 0; i < 16; ++i) {
    state = SplitMix64(state);
    key.push_back(kAlphabet[state % (sizeof kAlphabet - 1)]);
  }
  return key;
}

int MakeDevices(const Options& options) {
  std::printf("iccid,imsi,ip,status,psk,psk_format\n");
  for (unsigned i = 0; i < options.make_devices; ++i) {
    const std::string key = options.psk.empty() ? GeneratedKey(options.psk_seed, i) : options.psk;
    std::printf("%lu,%lu,127.0.0.%u,active,%s,\n", kIccidBase + i, kImsiBase + i, 2 + i,
                key.c_str());
  }
  return 0;
}

// The first `count` devices' credentials; exits with a message on a bad file.
std::vector<Credential> LoadCredentials(const Options& options, unsigned count) {
  std::vector<Credential> out;
  if (options.devices_csv.empty()) {
    if (options.psk.empty()) {
      std::fprintf(stderr, "dtls_blast: --devices-csv or --psk is required\n");
      std::exit(2);
    }
    for (unsigned i = 0; i < count; ++i) {
      out.push_back({std::to_string(kIccidBase + i), options.psk});
    }
    return out;
  }
  auto rows = coapgate::loadgen::ReadKeyCsv(options.devices_csv);  // bench/loadgen/dtls_keys.h
  if (!rows) {
    std::fprintf(stderr, "dtls_blast: %s\n", rows.error().c_str());
    std::exit(2);
  }
  for (coapgate::loadgen::KeyRow& row : *rows) {
    if (out.size() == count) break;
    Credential c{std::move(row.iccid), options.psk.empty() ? std::move(row.key) : options.psk};
    if (c.identity.empty() || c.key.empty() || c.key.size() > 64) {
      std::fprintf(stderr, "dtls_blast: %s:%zu: no iccid, or no psk (1..64 bytes)\n",
                   options.devices_csv.c_str(), row.line);
      std::exit(2);
    }
    out.push_back(std::move(c));
  }
  if (out.size() < count) {
    std::fprintf(stderr, "dtls_blast: %s has %zu devices, %u wanted\n",
                 options.devices_csv.c_str(), out.size(), count);
    std::exit(2);
  }
  return out;
}

// "a.b.c.d:port" inside 127.0.0.0/8 (this tool only ever talks to loopback).
bool ParseTarget(const std::string& text, sockaddr_in* out) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  const std::string host = text.substr(0, colon);
  const std::string port_text = text.substr(colon + 1);
  char* end = nullptr;
  const unsigned long port = std::strtoul(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port == 0 || port > 65535) return false;
  *out = sockaddr_in{};
  out->sin_family = AF_INET;
  out->sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &out->sin_addr) != 1) return false;
  return (ntohl(out->sin_addr.s_addr) >> 24) == 127;
}

std::string CodeKey(uint8_t code) {
  char key[8];
  std::snprintf(key, sizeof key, "%u.%02u", codec::CodeClass(code), codec::CodeDetail(code));
  return key;
}

void OnStopSignal(int) { g_stop.store(true, std::memory_order_relaxed); }

int Main(int argc, char** argv) {
  Options options;
  CLI::App app{"dtls_blast: DTLS 1.2 PSK (coaps://) load from N loopback device addresses"};
  app.add_option("--target", options.target, "coaps address, 127.x.y.z:port");
  app.add_option("--mode", options.mode_name, "requests | handshakes | flood")
      ->check(CLI::IsMember({"requests", "handshakes", "flood"}));
  app.add_option("--devices", options.devices,
                 "simulated devices = source IPs 127.0.0.2.. (handshakes: concurrent ones)")
      ->check(CLI::Range(1u, kMaxDevices));
  app.add_option("--window", options.window, "requests in flight per device")
      ->check(CLI::Range(1u, kMaxWindow));
  app.add_option("--duration", options.duration_s, "seconds of load (flood: at most)")
      ->check(CLI::Range(1u, kMaxDurationS));
  app.add_option("--threads", options.threads, "worker threads (devices split across them)")
      ->check(CLI::Range(1u, 64u));
  app.add_option("--payload", options.payload, "payload bytes")
      ->check(CLI::Range(0u, kMaxPayload));
  app.add_option("--topic", options.topic, "Uri-Query t=<topic>; empty = no query")
      ->check([](const std::string& t) { return t.size() <= 253 ? "" : "at most 253 chars"; });
  app.add_option("--devices-csv", options.devices_csv,
                 "devices CSV: identity = iccid, key = psk (psk_format hex: hex-decoded)");
  app.add_option("--psk", options.psk, "one PSK (text) for every device")
      ->check([](const std::string& k) { return k.size() <= 64 ? "" : "at most 64 bytes"; });
  app.add_option("--cipher", options.cipher, "wolfSSL suite name (PSK-AES128-CCM-8, ...)");
  app.add_option("--max-requests", options.max_requests, "stop after this many requests")
      ->check(CLI::Range(uint64_t{1}, uint64_t{10'000'000'000}));
  app.add_option("--max-handshakes", options.max_handshakes,
                 "handshakes mode: stop after this many")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1'000'000'000}));
  app.add_option("--setup-timeout", options.setup_timeout_s,
                 "requests mode: seconds for the initial handshakes")
      ->check(CLI::Range(1u, 120u));
  app.add_option("--handshake-timeout", options.handshake_timeout_ms,
                 "ms before an unfinished handshake counts as timed out")
      ->check(CLI::Range(100u, 60'000u));
  app.add_option("--flood-count", options.flood_count, "flood: ClientHellos to send")
      ->check(CLI::Range(uint64_t{1}, uint64_t{10'000'000}));
  app.add_option("--flood-rate", options.flood_rate, "flood: ClientHellos per second")
      ->check(CLI::Range(1u, 1'000'000u));
  app.add_flag("--flood-forged", options.flood_forged,
               "flood: every other ClientHello carries a forged cookie");
  app.add_option("--make-devices", options.make_devices,
                 "print a devices CSV with a PSK per device for N devices, and exit")
      ->check(CLI::Range(1u, kMaxDevices));
  app.add_option("--psk-seed", options.psk_seed, "--make-devices: seed of the generated keys");
  CLI11_PARSE(app, argc, argv);

  if (options.make_devices > 0) return MakeDevices(options);
  sockaddr_in target;
  if (!ParseTarget(options.target, &target)) {
    std::fprintf(stderr, "dtls_blast: --target must be 127.x.y.z:port (port > 0)\n");
    return 2;
  }
  options.mode = options.mode_name == "handshakes" ? Mode::kHandshakes
                 : options.mode_name == "flood"    ? Mode::kFlood
                                                   : Mode::kRequests;
  options.threads = std::min(options.threads, options.devices);

  struct sigaction action{};
  action.sa_handler = OnStopSignal;  // no SA_RESTART: epoll_wait returns EINTR
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  if (options.mode == Mode::kFlood) {
    const FloodResult r = RunFlood(options, target);
    std::printf(
        "{\"mode\":\"flood\",\"sent\":%lu,\"hvr_received\":%lu,\"other_received\":%lu,"
        "\"socket_errors\":%lu,\"send_errors\":%lu,\"duration_s\":%.3f,\"rate\":%.1f,"
        "\"forged_cookies\":%s,\"cpu_s\":%.2f}\n",
        r.sent, r.hvr, r.other, r.socket_errors, r.send_errors, r.seconds,
        r.seconds > 0 ? static_cast<double>(r.sent) / r.seconds : 0.0,
        options.flood_forged ? "true" : "false", CpuSeconds());
    return 0;
  }

  if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
    std::fprintf(stderr, "dtls_blast: wolfSSL_Init failed\n");
    return 1;
  }
  const std::vector<Credential> credentials = LoadCredentials(options, options.devices);
  std::vector<std::vector<std::pair<unsigned, const Credential*>>> shares(options.threads);
  for (unsigned i = 0; i < options.devices; ++i) {
    shares[i % options.threads].emplace_back(i, &credentials[i]);
  }
  std::vector<Progress> progress(options.threads);
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned t = 0; t < options.threads; ++t) {
    workers.push_back(std::make_unique<Worker>(options, target, shares[t], &progress[t]));
    workers.back()->set_max_sent((options.max_requests + options.threads - 1) / options.threads);
    workers.back()->set_max_handshakes((options.max_handshakes + options.threads - 1) /
                                       options.threads);
  }

  // requests: setup (all threads) -> ready -> main sets the clock -> go -> load -> done.
  std::mutex mu;
  std::condition_variable cv;
  unsigned ready = 0;
  unsigned done = 0;
  bool go = false;
  uint64_t start_ns = 0;
  uint64_t end_ns = 0;
  const bool requests = options.mode == Mode::kRequests;
  const uint64_t setup_start = NowNs();
  if (!requests) {
    start_ns = NowNs();
    end_ns = start_ns + uint64_t{options.duration_s} * 1'000'000'000;
    go = true;
  }
  std::vector<std::thread> running;
  for (unsigned t = 0; t < options.threads; ++t) {
    running.emplace_back([&, w = workers[t].get()] {
      if (requests) {
        w->Setup(setup_start + uint64_t{options.setup_timeout_s} * 1'000'000'000);
        uint64_t until;
        {
          std::unique_lock lock(mu);
          ++ready;
          cv.notify_all();
          cv.wait(lock, [&] { return go; });
          until = end_ns;
        }
        w->Load(until);
      } else {
        w->Churn(end_ns);
      }
      std::lock_guard lock(mu);
      ++done;
      cv.notify_all();
    });
  }
  double setup_s = 0;
  unsigned established = 0;
  double cpu_before_load = 0;
  if (requests) {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return ready == options.threads; });
    setup_s = static_cast<double>(NowNs() - setup_start) / 1e9;
    for (const auto& w : workers) established += w->established();
    std::fprintf(stderr, "dtls_blast: %u of %u sessions established in %.2f s\n", established,
                 options.devices, setup_s);
    cpu_before_load = CpuSeconds();
    start_ns = NowNs();
    end_ns = start_ns + uint64_t{options.duration_s} * 1'000'000'000;
    go = true;
    cv.notify_all();
  }

  {  // Progress once a second until every worker is done.
    std::unique_lock lock(mu);
    auto next = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    uint64_t last = 0;
    for (unsigned second = 1;
         !cv.wait_until(lock, next, [&] { return done == options.threads; }); ++second) {
      uint64_t sent = 0, answered = 0, timeouts = 0, handshakes = 0, failures = 0;
      for (const Progress& p : progress) {
        sent += p.sent.load(std::memory_order_relaxed);
        answered += p.answered.load(std::memory_order_relaxed);
        timeouts += p.timeouts.load(std::memory_order_relaxed);
        handshakes += p.handshakes.load(std::memory_order_relaxed);
        failures += p.failures.load(std::memory_order_relaxed);
      }
      if (requests) {
        std::fprintf(stderr, "dtls_blast: %3us sent=%lu answered=%lu (%lu/s) timeouts=%lu\n",
                     second, sent, answered, answered - last, timeouts);
        last = answered;
      } else {
        std::fprintf(stderr, "dtls_blast: %3us handshakes=%lu (%lu/s) failures=%lu\n", second,
                     handshakes, handshakes - last, failures);
        last = handshakes;
      }
      next += std::chrono::seconds(1);
    }
  }
  for (std::thread& t : running) t.join();
  const double cpu_s = CpuSeconds() - cpu_before_load;

  Counters total;
  LatencyHistogram latency;
  LatencyHistogram handshake_latency;
  uint64_t stop_ns = start_ns;
  uint64_t unfinished = 0;
  for (const auto& w : workers) {
    const Counters& c = w->counters();
    total.sent += c.sent;
    total.answered += c.answered;
    total.timeouts += c.timeouts;
    total.unmatched += c.unmatched;
    total.malformed += c.malformed;
    total.send_errors += c.send_errors;
    total.icmp_errors += c.icmp_errors;
    total.rst += c.rst;
    total.write_errors += c.write_errors;
    total.sessions_lost += c.sessions_lost;
    total.lost_in_flight += c.lost_in_flight;
    for (unsigned i = 0; i < 256; ++i) total.codes[i] += c.codes[i];
    total.handshakes += c.handshakes;
    total.handshake_failures += c.handshake_failures;
    total.handshake_timeouts += c.handshake_timeouts;
    total.retransmissions += c.retransmissions;
    total.socket_errors += c.socket_errors;
    total.datagrams_sent += c.datagrams_sent;
    total.datagrams_received += c.datagrams_received;
    for (const auto& [code, n] : c.errors) total.errors[code] += n;
    latency.Merge(w->latency());
    handshake_latency.Merge(w->handshake_latency());
    stop_ns = std::max(stop_ns, w->stop_ns());
    unfinished += w->in_flight_at_stop();
  }
  const double duration_s = static_cast<double>(stop_ns - start_ns) / 1e9;
  std::string errors;
  for (const auto& [code, n] : total.errors) {
    if (!errors.empty()) errors += ",";
    errors += "\"" + std::to_string(code) + "\":" + std::to_string(n);
  }

  if (requests) {
    std::string codes;
    for (unsigned i = 0; i < 256; ++i) {
      if (total.codes[i] == 0) continue;
      if (!codes.empty()) codes += ",";
      codes += "\"" + CodeKey(static_cast<uint8_t>(i)) + "\":" + std::to_string(total.codes[i]);
    }
    if (total.rst > 0) {
      codes += (codes.empty() ? "" : ",") + ("\"RST\":" + std::to_string(total.rst));
    }
    std::printf(
        "{\"mode\":\"requests\",\"sent\":%lu,\"answered\":%lu,\"codes\":{%s},\"timeouts\":%lu,"
        "\"duration_s\":%.3f,\"rate\":%.1f,\"latency_us\":{\"p50\":%.1f,\"p99\":%.1f,"
        "\"p999\":%.1f},\"unfinished\":%lu,\"unmatched\":%lu,\"malformed\":%lu,"
        "\"send_errors\":%lu,\"icmp_errors\":%lu,\"write_errors\":%lu,\"sessions_lost\":%lu,"
        "\"lost_in_flight\":%lu,\"setup\":{\"established\":%u,\"handshake_failures\":%lu,"
        "\"handshake_timeouts\":%lu,\"retransmissions\":%lu,\"seconds\":%.3f},"
        "\"errors\":{%s},\"datagrams\":{\"sent\":%lu,\"received\":%lu},\"devices\":%u,"
        "\"window\":%u,\"threads\":%u,\"cipher\":\"%s\",\"cpu_s\":%.2f}\n",
        total.sent, total.answered, codes.c_str(), total.timeouts, duration_s,
        duration_s > 0 ? static_cast<double>(total.answered) / duration_s : 0.0,
        latency.Quantile(0.50) / 1e3, latency.Quantile(0.99) / 1e3,
        latency.Quantile(0.999) / 1e3, unfinished, total.unmatched, total.malformed,
        total.send_errors, total.icmp_errors, total.write_errors, total.sessions_lost,
        total.lost_in_flight, established, total.handshake_failures, total.handshake_timeouts,
        total.retransmissions, setup_s, errors.c_str(), total.datagrams_sent,
        total.datagrams_received, options.devices, options.window,
        options.threads, options.cipher.c_str(), cpu_s);
  } else {
    std::printf(
        "{\"mode\":\"handshakes\",\"handshakes\":%lu,\"failures\":%lu,\"timeouts\":%lu,"
        "\"retransmissions\":%lu,\"unfinished\":%lu,\"socket_errors\":%lu,\"send_errors\":%lu,"
        "\"icmp_errors\":%lu,\"duration_s\":%.3f,\"rate\":%.1f,\"latency_us\":{\"p50\":%.1f,"
        "\"p99\":%.1f,\"p999\":%.1f},\"errors\":{%s},\"datagrams\":{\"sent\":%lu,"
        "\"received\":%lu},\"devices\":%u,\"threads\":%u,\"cipher\":\"%s\",\"cpu_s\":%.2f}\n",
        total.handshakes, total.handshake_failures, total.handshake_timeouts,
        total.retransmissions, unfinished, total.socket_errors, total.send_errors,
        total.icmp_errors, duration_s,
        duration_s > 0 ? static_cast<double>(total.handshakes) / duration_s : 0.0,
        handshake_latency.Quantile(0.50) / 1e3, handshake_latency.Quantile(0.99) / 1e3,
        handshake_latency.Quantile(0.999) / 1e3, errors.c_str(), total.datagrams_sent,
        total.datagrams_received, options.devices, options.threads, options.cipher.c_str(),
        cpu_s);
  }
  workers.clear();  // frees every WOLFSSL before the library goes
  wolfSSL_Cleanup();
  return 0;
}

}  // namespace
}  // namespace coapgate::bench

int main(int argc, char** argv) { return coapgate::bench::Main(argc, argv); }
