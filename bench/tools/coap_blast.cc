// coap_blast: a simple closed-loop CoAP load driver for loopback benchmarks (SPEC §11). The
// fleet load generator with 100,000 addresses comes later (bench/loadgen); this one measures a
// server against the bare-echo ceiling (udp_echo) and libcoap on one machine.
//
// Each simulated device is one UDP socket bound to 127.0.0.(2+i):0 and connected to the
// target, so the server sees N distinct device IPs (Linux routes all of 127/8 to lo: no setup).
// Every device keeps W confirmable requests in flight (after a slow start from 1, see Device):
// a response matching (MID, token) is recorded and its slot immediately sends the next request;
// a request unanswered after 2 s is a timeout and its slot is reused (never retransmitted).
// Requests: CON POST / (by default; --method/--path change it) with Uri-Query "t=<topic>", a
// 4-byte token, per-device incrementing MIDs and a payload "d=NNN s=SSSSSSSSSS " (device index,
// per-device sequence number) followed by filler. MIDs wrap after 65,536 requests per device,
// but tokens never repeat within a run, so a server deduplicating on (endpoint, MID, token)
// (SPEC §4) still sees every request as new. --non sends NON requests, matched by token only.
// Empty ACKs and separate responses (RFC 7252 §5.2.2) are followed; an RST counts as an answer.
//
// Usage: coap_blast --target 127.0.0.1:PORT [--devices N] [--window W] [--duration S]
//            [--threads T] [--payload BYTES] [--topic T] [--method M] [--path P] [--non]
//            [--max-requests COUNT]
//
// Output: one JSON object on stdout at the end; a progress line per second on stderr.
//
// Thread contract: devices are split across worker threads (device i -> thread i % T); a
// worker alone owns its devices' sockets, slots, histogram and counters. The only shared state
// is the stop flag, the published progress counters (relaxed atomics, one cache line per
// worker) and the done count under a mutex.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

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
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "bench/loadgen/histogram.h"
#include "codec/code.h"
#include "codec/message.h"

namespace coapgate::bench {
namespace {

// recvmmsg/sendmmsg batch; also the largest window (a device refills its window in one call).
constexpr unsigned kBatch = 64;
constexpr unsigned kMaxWindow = kBatch;
// A device gets at most this many recvmmsg calls per wake-up, so one busy device cannot
// starve the others on its thread.
constexpr unsigned kDrainRounds = 4;
// CoAP's ACK_TIMEOUT (RFC 7252 §4.8): past it a real client would retransmit.
constexpr uint64_t kTimeoutNs = 2'000'000'000;
// Timeouts are looked for this often; also the longest epoll_wait, so a stop is seen quickly.
constexpr uint64_t kScanNs = 50'000'000;
constexpr unsigned kMaxDurationS = 300;
constexpr unsigned kMaxPayload = 1024;
// "d=NNN s=SSSSSSSSSS ": the sequence number's 10 digits start at offset 8.
constexpr size_t kSeqOffset = 8;
constexpr size_t kSeqDigits = 10;
constexpr size_t kTokenLength = 4;
constexpr size_t kRecvBuffer = 2048;

std::atomic<bool> g_stop{false};

uint64_t NowNs() noexcept {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

using coapgate::loadgen::LatencyHistogram;  // bench/loadgen/histogram.h

struct Options {
  std::string target = "127.0.0.1:5683";
  unsigned devices = 64;
  unsigned window = 4;
  unsigned duration_s = 10;
  unsigned threads = 1;
  unsigned payload = 48;
  std::string topic = "bench";
  std::string method = "post";
  std::string path = "/";
  uint8_t code = codec::code::kPost;  // from `method`
  bool non = false;
  uint64_t max_requests = 1'000'000'000;
};

struct Counters {
  uint64_t sent = 0;
  uint64_t answered = 0;
  uint64_t timeouts = 0;
  uint64_t unmatched = 0;    // well-formed but for no request in flight (late, duplicate)
  uint64_t malformed = 0;    // not CoAP
  uint64_t send_errors = 0;  // sendmmsg failures (the slots are retried later)
  uint64_t icmp_errors = 0;  // ECONNREFUSED: nothing listening at the target
  uint64_t rst = 0;
  std::array<uint64_t, 256> codes{};
};

// What a worker publishes for the progress line; one cache line each, written only by it.
struct alignas(64) Progress {
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> answered{0};
  std::atomic<uint64_t> timeouts{0};
};

struct Slot {
  uint64_t sent_ns = 0;
  uint32_t token = 0;
  uint16_t mid = 0;
  bool busy = false;
  bool separate = false;  // an empty ACK came: the response follows with the token only
};

struct Device {
  int fd = -1;
  // Slow start: the window opens from 1 by one per answer up to W, so the first burst is N
  // datagrams, not N x W (256 at once overflow a default 208 KiB receive buffer, e.g.
  // libcoap's, and would show up as start-up timeouts rather than steady-state behaviour).
  unsigned window = 1;
  unsigned busy = 0;
  uint32_t next_seq = 0;
  uint32_t token_base = 0;  // random: tokens differ across devices and runs
  uint16_t mid_base = 0;
  std::vector<Slot> slots;
  std::vector<std::byte> body;  // options, payload marker, payload with this device's index
};

// The part of every request after the header and token: options in number order (Uri-Path
// segments, Uri-Query "t=<topic>"), then the payload marker and "d=NNN s=" + filler for
// `device`. The sequence digits are patched per request.
std::vector<std::byte> RequestBody(const Options& options, unsigned device) {
  std::vector<std::byte> body;
  unsigned previous = 0;
  auto option = [&](unsigned number, std::string_view value) {
    auto nibble = [](size_t v) { return v < 13 ? v : v < 269 ? 13 : 14; };
    const unsigned delta = number - previous;
    body.push_back(static_cast<std::byte>(nibble(delta) << 4 | nibble(value.size())));
    for (size_t v : {size_t{delta}, value.size()}) {
      if (v >= 269) {
        body.push_back(static_cast<std::byte>((v - 269) >> 8));
        body.push_back(static_cast<std::byte>((v - 269) & 0xff));
      } else if (v >= 13) {
        body.push_back(static_cast<std::byte>(v - 13));
      }
    }
    for (char c : value) body.push_back(static_cast<std::byte>(c));
    previous = number;
  };
  std::string_view path = options.path;
  while (!path.empty()) {
    const size_t slash = path.find('/');
    const std::string_view segment = path.substr(0, slash);
    if (!segment.empty()) option(11, segment);  // Uri-Path
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
  }
  if (!options.topic.empty()) option(15, "t=" + options.topic);  // Uri-Query
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

class Worker {
 public:
  Worker(const Options& options, std::vector<Device> devices, uint64_t end_ns,
         uint64_t max_sent, Progress* progress)
      : options_(options),
        devices_(std::move(devices)),
        end_ns_(end_ns),
        max_sent_(max_sent),
        progress_(progress) {
    size_t largest = 0;
    for (const Device& d : devices_) largest = std::max(largest, d.body.size());
    request_size_ = 4 + kTokenLength + largest;
    send_buf_.resize(kBatch * request_size_);
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
    for (const Device& d : devices_) close(d.fd);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void Run() noexcept {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    for (uint32_t i = 0; i < devices_.size(); ++i) {
      epoll_event event{};
      event.events = EPOLLIN;
      event.data.u32 = i;
      if (epoll_ctl(epoll_, EPOLL_CTL_ADD, devices_[i].fd, &event) != 0) {
        std::perror("coap_blast: epoll_ctl");
        std::abort();
      }
    }
    for (Device& d : devices_) Refill(d);
    uint64_t next_scan = NowNs() + kScanNs;
    std::array<epoll_event, 256> events;
    for (;;) {
      uint64_t now = NowNs();
      if (now >= end_ns_ || g_stop.load(std::memory_order_relaxed)) break;
      if (counters_.sent >= max_sent_ && InFlight() == 0) break;  // --max-requests reached
      if (now >= next_scan) {
        ExpireAndRefill(now);
        next_scan = now + kScanNs;
      }
      const uint64_t wait_ns = std::min(next_scan, end_ns_) - now;
      const int wait_ms = static_cast<int>((wait_ns + 999'999) / 1'000'000);
      const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), wait_ms);
      for (int i = 0; i < n; ++i) {
        Device& d = devices_[events[static_cast<size_t>(i)].data.u32];
        Drain(d);
        Refill(d);
      }
      progress_->sent.store(counters_.sent, std::memory_order_relaxed);
      progress_->answered.store(counters_.answered, std::memory_order_relaxed);
      progress_->timeouts.store(counters_.timeouts, std::memory_order_relaxed);
    }
    stop_ns_ = NowNs();
    close(epoll_);
  }

  [[nodiscard]] const Counters& counters() const noexcept { return counters_; }
  [[nodiscard]] const LatencyHistogram& latency() const noexcept { return latency_; }
  [[nodiscard]] uint64_t stop_ns() const noexcept { return stop_ns_; }
  [[nodiscard]] uint64_t InFlight() const noexcept {
    uint64_t n = 0;
    for (const Device& d : devices_) n += d.busy;
    return n;
  }

 private:
  // Sends a request in every free slot of `d` its current window allows, in one sendmmsg.
  // Slots sendmmsg did not take stay free and are retried on the next wake-up or scan.
  void Refill(Device& d) noexcept {
    if (g_stop.load(std::memory_order_relaxed)) return;
    std::array<uint16_t, kBatch> slot_of;
    unsigned n = 0;
    for (uint16_t s = 0; s < d.slots.size() && d.busy + n < d.window &&
                         counters_.sent + n < max_sent_;
         ++s) {
      if (d.slots[s].busy) continue;
      const uint32_t seq = d.next_seq + n;
      std::byte* out = &send_buf_[n * request_size_];
      const uint16_t mid = static_cast<uint16_t>(d.mid_base + seq);
      const uint32_t token = d.token_base + seq;
      out[0] = static_cast<std::byte>(0x40 | (options_.non ? 0x10 : 0x00) | kTokenLength);
      out[1] = static_cast<std::byte>(options_.code);
      out[2] = static_cast<std::byte>(mid >> 8);
      out[3] = static_cast<std::byte>(mid & 0xff);
      std::memcpy(out + 4, &token, kTokenLength);
      std::memcpy(out + 4 + kTokenLength, d.body.data(), d.body.size());
      PatchSequence(d, seq, out + 4 + kTokenLength);
      send_iov_[n] = {out, 4 + kTokenLength + d.body.size()};
      d.slots[s].mid = mid;
      d.slots[s].token = token;
      slot_of[n++] = s;
    }
    if (n == 0) return;
    const uint64_t now = NowNs();
    int sent = sendmmsg(d.fd, send_msg_.data(), n, 0);
    if (sent < 0) {
      if (errno == ECONNREFUSED) {
        ++counters_.icmp_errors;
      } else if (errno != EAGAIN && errno != EINTR) {
        ++counters_.send_errors;
      }
      sent = 0;
    }
    for (int i = 0; i < sent; ++i) {
      Slot& slot = d.slots[slot_of[static_cast<size_t>(i)]];
      slot.busy = true;
      slot.separate = false;
      slot.sent_ns = now;
    }
    d.next_seq += static_cast<uint32_t>(sent);
    d.busy += static_cast<unsigned>(sent);
    counters_.sent += static_cast<uint64_t>(sent);
  }

  // Writes `seq` into the payload's fixed-width digits, as far as the payload reaches.
  void PatchSequence(const Device& d, uint32_t seq, std::byte* body) const noexcept {
    if (options_.payload == 0) return;
    const size_t payload_start = d.body.size() - options_.payload;
    char digits[kSeqDigits];
    for (size_t i = kSeqDigits; i-- > 0; seq /= 10) digits[i] = static_cast<char>('0' + seq % 10);
    for (size_t i = 0; i < kSeqDigits && kSeqOffset + i < options_.payload; ++i) {
      body[payload_start + kSeqOffset + i] = static_cast<std::byte>(digits[i]);
    }
  }

  void Drain(Device& d) noexcept {
    for (unsigned round = 0; round < kDrainRounds; ++round) {
      const int n = recvmmsg(d.fd, recv_msg_.data(), kBatch, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == ECONNREFUSED) {  // a pending ICMP error; datagrams may still follow
          ++counters_.icmp_errors;
          continue;
        }
        return;  // EAGAIN
      }
      const uint64_t now = NowNs();
      for (int i = 0; i < n; ++i) {
        const mmsghdr& m = recv_msg_[static_cast<size_t>(i)];
        OnDatagram(d, std::span<const std::byte>(
                          static_cast<const std::byte*>(m.msg_hdr.msg_iov->iov_base), m.msg_len),
                   now);
      }
      if (static_cast<unsigned>(n) < kBatch) return;
    }
  }

  void OnDatagram(Device& d, std::span<const std::byte> datagram, uint64_t now) noexcept {
    const auto message = codec::ParseMessage(datagram);
    if (!message) {
      ++counters_.malformed;
      return;
    }
    uint32_t token = 0;
    const bool has_token = message->token.size() == kTokenLength;
    if (has_token) std::memcpy(&token, message->token.data(), kTokenLength);
    const auto type = message->type;
    for (Slot& s : d.slots) {
      if (!s.busy) continue;
      if (type == codec::MessageType::kAcknowledgement || type == codec::MessageType::kReset) {
        if (s.mid != message->message_id) continue;
        if (type == codec::MessageType::kReset) {
          ++counters_.rst;
        } else if (message->code == codec::code::kEmpty) {
          s.separate = true;  // RFC 7252 §5.2.2: the response comes later, matched by token
          return;
        } else if (!has_token || s.token != token) {
          continue;
        } else {
          ++counters_.codes[message->code];
        }
      } else {
        // A separate response (CON or NON) or the NON answer to a NON request: token only.
        if (!has_token || s.token != token || (!options_.non && !s.separate)) continue;
        ++counters_.codes[message->code];
        if (type == codec::MessageType::kConfirmable) AckSeparate(d, message->message_id);
      }
      s.busy = false;
      --d.busy;
      if (d.window < d.slots.size()) ++d.window;
      ++counters_.answered;
      latency_.Record(now - s.sent_ns);
      return;
    }
    ++counters_.unmatched;
  }

  // The empty ACK a client owes for a confirmable separate response.
  void AckSeparate(const Device& d, uint16_t mid) noexcept {
    const std::array<std::byte, 4> ack = {std::byte{0x60}, std::byte{0x00},
                                          static_cast<std::byte>(mid >> 8),
                                          static_cast<std::byte>(mid & 0xff)};
    if (send(d.fd, ack.data(), ack.size(), MSG_DONTWAIT) < 0) ++counters_.send_errors;
  }

  void ExpireAndRefill(uint64_t now) noexcept {
    for (Device& d : devices_) {
      for (Slot& s : d.slots) {
        if (s.busy && now - s.sent_ns >= kTimeoutNs) {
          s.busy = false;
          --d.busy;
          ++counters_.timeouts;
        }
      }
      Refill(d);
    }
  }

  const Options& options_;
  std::vector<Device> devices_;
  const uint64_t end_ns_;
  const uint64_t max_sent_;
  Progress* const progress_;
  size_t request_size_ = 0;
  int epoll_ = -1;
  uint64_t stop_ns_ = 0;
  Counters counters_;
  LatencyHistogram latency_;
  std::vector<std::byte> send_buf_;
  std::vector<std::byte> recv_buf_;
  std::array<iovec, kBatch> send_iov_{};
  std::array<iovec, kBatch> recv_iov_{};
  std::array<mmsghdr, kBatch> send_msg_{};
  std::array<mmsghdr, kBatch> recv_msg_{};
};

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

// Device i's socket: bound to 127.0.0.(2+i), an ephemeral port, connected to the target (so
// the kernel filters out anything not from the server). Exits on failure (startup).
int OpenDeviceSocket(unsigned i, const sockaddr_in& target) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl((127u << 24) | (2 + i));
  if (fd < 0 || bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0 ||
      connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0) {
    std::fprintf(stderr, "coap_blast: device %u (127.0.0.%u): %s\n", i, 2 + i,
                 std::strerror(errno));
    std::exit(1);
  }
  return fd;
}

std::string CodeKey(uint8_t code) {
  char key[8];
  std::snprintf(key, sizeof key, "%u.%02u", codec::CodeClass(code), codec::CodeDetail(code));
  return key;
}

void OnStopSignal(int) { g_stop.store(true, std::memory_order_relaxed); }

int Main(int argc, char** argv) {
  Options options;
  CLI::App app{"coap_blast: closed-loop CoAP CON load from N loopback device addresses"};
  app.add_option("--target", options.target, "server address, 127.x.y.z:port")->required();
  app.add_option("--devices", options.devices, "simulated devices = source IPs 127.0.0.2..")
      ->check(CLI::Range(1u, 250u));
  app.add_option("--window", options.window, "requests in flight per device")
      ->check(CLI::Range(1u, kMaxWindow));
  app.add_option("--duration", options.duration_s, "seconds of load")
      ->check(CLI::Range(1u, kMaxDurationS));
  app.add_option("--threads", options.threads, "worker threads (devices split across them)")
      ->check(CLI::Range(1u, 64u));
  app.add_option("--payload", options.payload, "payload bytes")
      ->check(CLI::Range(0u, kMaxPayload));
  app.add_option("--topic", options.topic, "Uri-Query t=<topic>; empty = no query")
      ->check([](const std::string& t) { return t.size() <= 253 ? "" : "at most 253 chars"; });
  app.add_option("--method", options.method, "request method")
      ->check(CLI::IsMember({"get", "post", "put", "delete"}));
  app.add_option("--path", options.path, "Uri-Path, '/'-separated; '/' = none")
      ->check([](const std::string& p) {
        return p.size() <= 255 ? "" : "at most 255 chars";
      });
  app.add_flag("--non", options.non, "send NON requests (answers matched by token)");
  app.add_option("--max-requests", options.max_requests, "stop after this many requests")
      ->check(CLI::Range(uint64_t{1}, uint64_t{10'000'000'000}));
  CLI11_PARSE(app, argc, argv);

  sockaddr_in target;
  if (!ParseTarget(options.target, &target)) {
    std::fprintf(stderr, "coap_blast: --target must be 127.x.y.z:port (port > 0)\n");
    return 2;
  }
  options.code = options.method == "get"      ? codec::code::kGet
                 : options.method == "put"    ? codec::code::kPut
                 : options.method == "delete" ? codec::code::kDelete
                                              : codec::code::kPost;
  options.threads = std::min(options.threads, options.devices);

  struct sigaction action{};
  action.sa_handler = OnStopSignal;  // no SA_RESTART: epoll_wait returns EINTR
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  std::random_device entropy;
  std::vector<std::vector<Device>> shares(options.threads);
  for (unsigned i = 0; i < options.devices; ++i) {
    Device d;
    d.fd = OpenDeviceSocket(i, target);
    d.token_base = entropy();
    d.mid_base = static_cast<uint16_t>(entropy());
    d.slots.resize(options.window);
    d.body = RequestBody(options, i);
    shares[i % options.threads].push_back(std::move(d));
  }

  const uint64_t start_ns = NowNs();
  const uint64_t end_ns = start_ns + uint64_t{options.duration_s} * 1'000'000'000;
  const uint64_t per_thread = (options.max_requests + options.threads - 1) / options.threads;
  std::vector<Progress> progress(options.threads);
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::thread> running;
  std::mutex mu;
  std::condition_variable cv;
  unsigned done = 0;
  for (unsigned t = 0; t < options.threads; ++t) {
    workers.push_back(std::make_unique<Worker>(options, std::move(shares[t]), end_ns,
                                               per_thread, &progress[t]));
    running.emplace_back([&, w = workers.back().get()] {
      w->Run();
      std::lock_guard lock(mu);
      ++done;
      cv.notify_one();
    });
  }

  {  // Progress once a second until every worker is done.
    std::unique_lock lock(mu);
    auto next = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    uint64_t last_answered = 0;
    for (unsigned second = 1;
         !cv.wait_until(lock, next, [&] { return done == options.threads; }); ++second) {
      uint64_t sent = 0, answered = 0, timeouts = 0;
      for (const Progress& p : progress) {
        sent += p.sent.load(std::memory_order_relaxed);
        answered += p.answered.load(std::memory_order_relaxed);
        timeouts += p.timeouts.load(std::memory_order_relaxed);
      }
      std::fprintf(stderr, "coap_blast: %3us sent=%lu answered=%lu (%lu/s) timeouts=%lu\n",
                   second, sent, answered, answered - last_answered, timeouts);
      last_answered = answered;
      next += std::chrono::seconds(1);
    }
  }
  for (std::thread& t : running) t.join();

  Counters total;
  LatencyHistogram latency;
  uint64_t stop_ns = start_ns;
  uint64_t in_flight = 0;
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
    for (unsigned i = 0; i < 256; ++i) total.codes[i] += c.codes[i];
    latency.Merge(w->latency());
    stop_ns = std::max(stop_ns, w->stop_ns());
    in_flight += w->InFlight();
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double cpu_s = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                       static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  const double duration_s = static_cast<double>(stop_ns - start_ns) / 1e9;

  std::string codes;
  for (unsigned i = 0; i < 256; ++i) {
    if (total.codes[i] == 0) continue;
    if (!codes.empty()) codes += ",";
    codes += "\"" + CodeKey(static_cast<uint8_t>(i)) + "\":" + std::to_string(total.codes[i]);
  }
  if (total.rst > 0) codes += (codes.empty() ? "" : ",") + ("\"RST\":" + std::to_string(total.rst));
  std::printf(
      "{\"sent\":%lu,\"answered\":%lu,\"codes\":{%s},\"timeouts\":%lu,\"duration_s\":%.3f,"
      "\"rate\":%.1f,\"latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"p999\":%.1f},"
      "\"unfinished\":%lu,\"unmatched\":%lu,\"malformed\":%lu,\"send_errors\":%lu,"
      "\"icmp_errors\":%lu,\"devices\":%u,\"window\":%u,\"threads\":%u,\"cpu_s\":%.2f}\n",
      total.sent, total.answered, codes.c_str(), total.timeouts, duration_s,
      duration_s > 0 ? static_cast<double>(total.answered) / duration_s : 0.0,
      latency.Quantile(0.50) / 1e3, latency.Quantile(0.99) / 1e3, latency.Quantile(0.999) / 1e3,
      in_flight, total.unmatched, total.malformed, total.send_errors, total.icmp_errors,
      options.devices, options.window, options.threads, cpu_s);
  return 0;
}

}  // namespace
}  // namespace coapgate::bench

int main(int argc, char** argv) { return coapgate::bench::Main(argc, argv); }
