// coapgate-loadgen: a fleet-simulating CoAP load generator for loopback benchmarks (bench/README.md#goals,
// reliability reference §3.7). Up to 1,000,000 simulated devices, each with its own source
// address in 127.0.0.0/8 (address_plan.h), send CON or NON POST /?t=<topic> requests whose
// payload names the device and a per-device sequence number, with RFC 7252 retransmission,
// closed loop (--window per device, --in-flight in all) or open loop (--rate), for at most
// --duration seconds.
//
// DTLS mode (--dtls; --target is then the coaps port; IPv4 only): every device gets a PSK
// credential (--keys csv:FILE, the fleet CSV's iccid/psk columns, or --keys bootstrap:HOST:PORT,
// a plain-CoAP GET /bootstrap from the device's own address, dtls_keys.h), then every device
// does a full DTLS 1.2 PSK handshake (wolfSSL clients fed by the workers' single sockets,
// fleet.h), timed on its own ("dtls" in the JSON), then the usual closed or open loop runs
// over the sessions, each request one record. --dtls-handshakes-only instead measures full
// handshakes per second for --duration: handshake, close_notify, new handshake, per device.
// --flood sends a spoofed-ClientHello flood instead (client_hello_flood.h): --flood-count
// cookieless ClientHellos from fresh 127.64.0.0/10 addresses and ports at --flood-rate per
// second, for at most --duration seconds; the server should answer each with a
// HelloVerifyRequest and keep no state. No fleet, no keys.
// Memory: a WOLFSSL with its established session is a few KiB of heap (measured per run:
// "dtls.heap_bytes_per_session"), so DTLS mode allows at most kMaxDtlsDevices devices.
//
// Output: one JSON object on stdout at the end, a progress line per second on stderr, and with
// --ack-log one "device seq code" line per 2.xx answer, so that a checker can prove every
// acknowledged request reached the sink (with --ack-log-all one line per outcome, 5.03s, RSTs
// and timeouts too, each with its first transmission's CLOCK_MONOTONIC ms, so that a checker
// can count what went wrong while it did something). make_fleet_csv.py writes the matching
// registry CSV.
//
// --routed lifts the loopback-only rule for IPv4: the target and the devices' addresses may
// then be anywhere, for a network namespace the caller set up (the devices' prefix routed
// locally, `ip route add local 10.99.0.0/16 dev lo`, and a route to the target), as
// tests/e2e/test_cluster.py does; without it, nothing can leave the machine by mistake.
//
// Signals: SIGINT/SIGTERM stop at once (open exchanges count as unfinished); SIGUSR1 ends the
// load phase early, as --duration would, and the drain follows (for a caller that ends the
// load when it is done with it).
//
// Threads: devices are split across --threads workers (fleet.h); the main thread only starts
// them, prints progress from their relaxed counters, and merges their results after joining.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <malloc.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "bench/loadgen/monotonic_ns.h"
#include "bench/loadgen/address_plan.h"
#include "bench/loadgen/client_hello_flood.h"
#include "bench/loadgen/dtls_keys.h"
#include "bench/loadgen/fleet.h"
#include "bench/loadgen/histogram.h"
#include "bench/loadgen/request_template.h"
#include "bench/loadgen/retransmit.h"
#include "codec/code.h"

namespace coapgate::loadgen {
namespace {

constexpr unsigned kMaxDurationS = 600;
constexpr uint32_t kMaxIpv6Devices = 28'000;  // the ephemeral port range, one socket each

constexpr uint32_t kMaxDtlsDevices = 100'000;

std::atomic<bool> g_stop{false};
std::atomic<bool> g_end_load{false};  // SIGUSR1: end the load now and drain, as at --duration

// wolfSSL's heap in use, counted through its allocator hooks: what the sessions cost.
std::atomic<int64_t> g_wolfssl_heap{0};
void* CountingMalloc(size_t size) {
  void* p = std::malloc(size);
  if (p != nullptr) {
    g_wolfssl_heap.fetch_add(static_cast<int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  }
  return p;
}
void CountingFree(void* p) {
  if (p == nullptr) return;
  g_wolfssl_heap.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  std::free(p);
}
void* CountingRealloc(void* p, size_t size) {
  const size_t before = p != nullptr ? malloc_usable_size(p) : 0;
  void* q = std::realloc(p, size);
  if (q == nullptr) return nullptr;
  g_wolfssl_heap.fetch_add(static_cast<int64_t>(malloc_usable_size(q)) -
                               static_cast<int64_t>(before),
                           std::memory_order_relaxed);
  return q;
}

void OnStopSignal(int) { g_stop.store(true, std::memory_order_relaxed); }
void OnEndLoadSignal(int) { g_end_load.store(true, std::memory_order_relaxed); }

struct Options {
  std::string target;
  uint32_t devices = 1000;
  std::string first_address = "127.1.0.1";
  unsigned window = 1;
  uint64_t in_flight = 0;  // 0 = devices x window
  double rate = 0;
  bool non = false;
  bool no_retransmit = false;
  uint32_t ack_timeout_ms = 2000;
  double ack_random_factor = 1.5;
  uint32_t max_retransmit = 4;
  unsigned duration_s = 10;
  uint32_t drain_ms = 3000;
  uint64_t max_requests = 0;  // 0 = no limit
  unsigned threads = 1;
  size_t payload = 48;
  std::string topic = "bench";
  std::string path = "/";
  std::string method = "post";
  std::string ack_log;
  bool ack_log_all = false;
  bool routed = false;
  uint64_t seed = 0;  // 0 = random
  int buffer_bytes = 32 << 20;
  bool dtls = false;
  bool dtls_handshakes_only = false;
  std::string keys;
  std::string cipher = "PSK-AES128-CCM-8";
  unsigned handshake_concurrency = 256;
  uint32_t handshake_timeout_ms = 10'000;
  unsigned setup_timeout_s = 60;
  unsigned bootstrap_in_flight = 32;
  bool flood = false;
  FloodOptions flood_options;
};

// "127.x.y.z:port" or "[::1]:port": this tool only ever talks to loopback, unless `routed`
// (--routed), which allows any IPv4 address.
bool ParseTarget(const std::string& text, sockaddr_storage* out, socklen_t* length,
                 bool routed) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) return false;
  char* end = nullptr;
  const unsigned long port = std::strtoul(text.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port == 0 || port > 65535) return false;
  std::string host = text.substr(0, colon);
  *out = sockaddr_storage{};
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    auto* a = reinterpret_cast<sockaddr_in6*>(out);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    host = host.substr(1, host.size() - 2);
    if (inet_pton(AF_INET6, host.c_str(), &a->sin6_addr) != 1) return false;
    *length = sizeof(sockaddr_in6);
    return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
  }
  auto* a = reinterpret_cast<sockaddr_in*>(out);
  a->sin_family = AF_INET;
  a->sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) return false;
  *length = sizeof(sockaddr_in);
  return routed || ntohl(a->sin_addr.s_addr) >> 24 == 127;
}

// Udp RcvbufErrors from /proc/net/snmp: datagrams dropped system-wide (server or us) because a
// receive buffer was full. -1 when unreadable.
int64_t UdpReceiveBufferErrors() {
  std::ifstream in("/proc/net/snmp");
  std::string header, values;
  while (std::getline(in, header)) {
    if (header.rfind("Udp:", 0) != 0 || !std::getline(in, values)) continue;
    std::istringstream names(header), numbers(values);
    std::string name, number;
    while (names >> name && numbers >> number) {
      if (name == "RcvbufErrors") return std::stoll(number);
    }
  }
  return -1;
}

std::string CodeKey(uint8_t code) {
  char key[8];
  std::snprintf(key, sizeof key, "%u.%02u", codec::CodeClass(code), codec::CodeDetail(code));
  return key;
}

// The share of `total` for the worker holding `part` of `whole` devices, rounded up.
uint64_t Share(uint64_t total, uint32_t part, uint32_t whole) {
  return (total * part + whole - 1) / whole;
}

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "coapgate-loadgen: a simulated fleet of CoAP devices on loopback, one source address "
      "each (127.0.0.0/8; ::1 with one port each), for benchmarking coapgate"};
  app.add_option("--target", o.target, "server address: 127.x.y.z:PORT or [::1]:PORT")
      ->required();
  app.add_option("--devices", o.devices, "simulated devices (IPv6: at most 28000, one socket each)")
      ->check(CLI::Range(1u, AddressPlan::kMaxDevices));
  app.add_option("--first-address", o.first_address,
                 "IPv4 address of device 0; device i has the i-th address from it, skipping "
                 "addresses ending in .0 and .255 (as make_fleet_csv.py)");
  app.add_option("--window", o.window, "requests in flight per device at most")
      ->check(CLI::Range(1u, kMaxWindow));
  app.add_option("--in-flight", o.in_flight,
                 "closed loop: requests in flight in all at most (default devices x window); "
                 "devices take turns when it is smaller")
      ->check(CLI::Range(uint64_t{1}, uint64_t{64'000'000}));
  app.add_option("--rate", o.rate, "open loop: new requests per second in all, paced")
      ->check(CLI::Range(1.0, 10'000'000.0));
  app.add_flag("--non", o.non, "NON requests (answers matched by token; never retransmitted)");
  app.add_flag("--no-retransmit", o.no_retransmit,
               "CON without retransmission: give up when the first wait ends");
  app.add_option("--ack-timeout", o.ack_timeout_ms, "ACK_TIMEOUT in ms (RFC 7252: 2000)")
      ->check(CLI::Range(1u, kMaxAckTimeoutMs));
  app.add_option("--ack-random-factor", o.ack_random_factor, "ACK_RANDOM_FACTOR (RFC 7252: 1.5)")
      ->check(CLI::Range(1.0, 4.0));
  app.add_option("--max-retransmit", o.max_retransmit, "MAX_RETRANSMIT (RFC 7252: 4)")
      ->check(CLI::Range(0u, kMaxMaxRetransmit));
  app.add_option("--duration", o.duration_s, "seconds of load (new requests); SIGUSR1 ends it early")
      ->check(CLI::Range(1u, kMaxDurationS));
  app.add_option("--drain-ms", o.drain_ms,
                 "after the load, wait at most this long for open exchanges (retransmitting)")
      ->check(CLI::Range(0u, 120'000u));
  app.add_option("--max-requests", o.max_requests, "stop starting requests after this many")
      ->check(CLI::Range(uint64_t{1}, uint64_t{10'000'000'000}));
  app.add_option("--threads", o.threads, "worker threads (device i -> thread i % T)")
      ->check(CLI::Range(1u, 64u));
  app.add_option("--payload", o.payload, "payload bytes (\"d=DDDDDDD s=SSSSSSSSSS \" + filler)")
      ->check(CLI::Range(kMinPayload, kMaxPayload));
  app.add_option("--topic", o.topic, "Uri-Query t=<topic>; empty = no query");
  app.add_option("--path", o.path, "Uri-Path, '/'-separated; '/' = none");
  app.add_option("--method", o.method, "request method")
      ->check(CLI::IsMember({"post", "put"}));
  app.add_option("--ack-log", o.ack_log,
                 "write \"device seq code\" per 2.xx answer to this file (for checkers)");
  app.add_flag("--ack-log-all", o.ack_log_all,
               "--ack-log gets every outcome, \"device seq code|RST|timeout first_sent_ms\" "
               "(CLOCK_MONOTONIC ms of the first transmission)");
  app.add_flag("--routed", o.routed,
               "IPv4 target and device addresses outside 127.0.0.0/8 (a network namespace with "
               "the devices' prefix routed to lo: ip route add local PREFIX dev lo)");
  app.add_option("--seed", o.seed, "seed of MIDs, tokens and waits (default: random)");
  app.add_option("--socket-buffer", o.buffer_bytes, "SO_RCVBUF/SO_SNDBUF bytes per socket")
      ->check(CLI::Range(65536, 1 << 30));
  app.add_flag("--dtls", o.dtls,
               "DTLS 1.2 PSK (coaps): --target is the coaps port; needs --keys; every device "
               "handshakes first, then the requests go over the sessions (IPv4 only, at most "
               "100000 devices)");
  app.add_flag("--dtls-handshakes-only", o.dtls_handshakes_only,
               "with --dtls: only full handshakes for --duration (handshake, close_notify, "
               "again, per device); reports handshakes per second");
  app.add_option("--keys", o.keys,
                 "DTLS keys: csv:FILE (iccid and psk per ip, make_fleet_csv.py --psk) or "
                 "bootstrap:HOST:PORT (each device GETs /bootstrap over plain CoAP first)");
  app.add_option("--cipher", o.cipher, "DTLS suite (wolfSSL name)");
  app.add_option("--handshake-concurrency", o.handshake_concurrency,
                 "DTLS: handshakes in progress at once, in all")
      ->check(CLI::Range(1u, 100'000u));
  app.add_option("--handshake-timeout", o.handshake_timeout_ms,
                 "DTLS: ms before a handshake is given up")
      ->check(CLI::Range(100u, 120'000u));
  app.add_option("--setup-timeout", o.setup_timeout_s,
                 "DTLS: seconds the bootstrap phase, and the handshake phase, may take each")
      ->check(CLI::Range(1u, 3600u));
  app.add_option("--bootstrap-in-flight", o.bootstrap_in_flight,
                 "GET /bootstrap requests open at once (the server fsyncs each)")
      ->check(CLI::Range(1u, 4096u));
  app.add_flag("--flood", o.flood,
               "a spoofed-ClientHello flood against the coaps port --target: cookieless "
               "ClientHellos from fresh 127.64.0.0/10 addresses and ports (no fleet, no keys)");
  app.add_option("--flood-count", o.flood_options.count, "flood: ClientHellos to send")
      ->check(CLI::Range(uint64_t{1}, uint64_t{100'000'000}));
  app.add_option("--flood-rate", o.flood_options.rate, "flood: ClientHellos per second")
      ->check(CLI::Range(1u, 1'000'000u));
  app.add_flag("--flood-forged", o.flood_options.forged_cookies,
               "flood: every other ClientHello carries a forged 32-byte cookie");
  CLI11_PARSE(app, argc, argv);
  if (o.flood && (o.dtls || o.dtls_handshakes_only)) {
    std::fprintf(stderr, "coapgate-loadgen: --flood is a mode of its own (no --dtls)\n");
    return 2;
  }
  if (o.dtls_handshakes_only) o.dtls = true;
  if (o.dtls && (o.keys.rfind("csv:", 0) != 0 && o.keys.rfind("bootstrap:", 0) != 0)) {
    std::fprintf(stderr, "coapgate-loadgen: --dtls needs --keys csv:FILE or --keys bootstrap:HOST:PORT\n");
    return 2;
  }
  if (!o.dtls && !o.keys.empty()) {
    std::fprintf(stderr, "coapgate-loadgen: --keys needs --dtls\n");
    return 2;
  }
  if (o.dtls && o.devices > kMaxDtlsDevices) {
    std::fprintf(stderr, "coapgate-loadgen: --dtls allows at most %u devices (memory)\n",
                 kMaxDtlsDevices);
    return 2;
  }

  FleetConfig config;
  if (o.ack_log_all && o.ack_log.empty()) {
    std::fprintf(stderr, "coapgate-loadgen: --ack-log-all needs --ack-log\n");
    return 2;
  }
  if (!ParseTarget(o.target, &config.target, &config.target_length, o.routed)) {
    std::fprintf(stderr, o.routed ? "coapgate-loadgen: --target must be A.B.C.D:PORT or [::1]:PORT\n"
                                  : "coapgate-loadgen: --target must be 127.x.y.z:PORT or "
                                    "[::1]:PORT (other IPv4 addresses with --routed)\n");
    return 2;
  }
  const bool ipv6 = config.target.ss_family == AF_INET6;
  if (o.flood) {
    if (ipv6) {
      std::fprintf(stderr, "coapgate-loadgen: --flood is IPv4 only\n");
      return 2;
    }
    struct sigaction action{};
    action.sa_handler = OnStopSignal;
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
    sockaddr_in target{};
    std::memcpy(&target, &config.target, sizeof target);
    ClientHelloFlood flood(target, o.flood_options);
    const FloodResult r = flood.Run(MonotonicNs() + uint64_t{o.duration_s} * 1'000'000'000, g_stop);
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    std::printf(
        "{\"mode\":\"flood\",\"sent\":%lu,\"hvr_received\":%lu,\"other_received\":%lu,"
        "\"socket_errors\":%lu,\"send_errors\":%lu,\"duration_s\":%.3f,\"rate\":%.1f,"
        "\"forged_cookies\":%s,\"cpu_s\":%.2f}\n",
        r.sent, r.hvr_received, r.other_received, r.socket_errors, r.send_errors, r.seconds,
        r.seconds > 0 ? static_cast<double>(r.sent) / r.seconds : 0.0,
        o.flood_options.forged_cookies ? "true" : "false",
        static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
            static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6);
    return r.sent > 0 ? 0 : 1;
  }
  if (ipv6 && o.dtls) {
    std::fprintf(stderr, "coapgate-loadgen: --dtls is IPv4 only\n");
    return 2;
  }
  std::optional<AddressPlan> plan;
  if (ipv6) {
    rlimit files{};
    getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;  // one socket per IPv6 device
    setrlimit(RLIMIT_NOFILE, &files);
    const uint64_t limit =
        std::min<uint64_t>(kMaxIpv6Devices, files.rlim_cur > 64 ? files.rlim_cur - 64 : 0);
    if (o.devices > limit) {
      std::fprintf(stderr,
                   "coapgate-loadgen: IPv6 devices are one socket each on ::1: at most %lu here "
                   "(open files limit, ephemeral ports)\n",
                   static_cast<unsigned long>(limit));
      return 2;
    }
    plan = AddressPlan::Ipv6Loopback(o.devices);
  } else {
    auto v4 = AddressPlan::Ipv4(o.first_address, o.devices, o.routed);
    if (!v4) {
      std::fprintf(stderr, "coapgate-loadgen: %s\n", v4.error().c_str());
      return 2;
    }
    plan = *v4;
  }

  RequestSpec spec;
  spec.confirmable = !o.non;
  spec.method = o.method == "put" ? codec::code::kPut : codec::code::kPost;
  spec.path = o.path;
  spec.topic = o.topic;
  spec.payload = o.payload;
  auto request = RequestTemplate::Build(spec);
  if (!request) {
    std::fprintf(stderr, "coapgate-loadgen: %s\n", request.error().c_str());
    return 2;
  }

  int ack_log_fd = -1;
  if (!o.ack_log.empty()) {
    ack_log_fd = open(o.ack_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (ack_log_fd < 0) {
      std::fprintf(stderr, "coapgate-loadgen: --ack-log %s: %s\n", o.ack_log.c_str(),
                   std::strerror(errno));
      return 2;
    }
  }
  if (o.seed == 0) o.seed = (uint64_t{std::random_device{}()} << 32) | std::random_device{}();

  const unsigned threads = std::min<unsigned>(o.threads, o.devices);
  const uint64_t in_flight_total =
      o.in_flight != 0 ? o.in_flight : uint64_t{o.devices} * o.window;
  config.plan = &*plan;
  config.request = &*request;
  config.threads = threads;
  config.window = o.window;
  config.confirmable = !o.non;
  config.retransmit = {o.ack_timeout_ms, o.ack_random_factor, o.max_retransmit, !o.no_retransmit};
  config.seed = o.seed;
  config.drain_ns = uint64_t{o.drain_ms} * 1'000'000;
  config.buffer_bytes = o.buffer_bytes;
  config.ack_log_fd = ack_log_fd;
  config.log_all = o.ack_log_all;
  config.stop = &g_stop;
  config.end_load = &g_end_load;

  std::vector<DtlsCredential> keys;
  BootstrapStats bootstrap;
  std::string bootstrap_json;
  if (o.dtls) {
    if (o.keys.rfind("csv:", 0) == 0) {
      auto loaded = LoadCsvKeys(o.keys.substr(4), *plan);
      if (!loaded) {
        std::fprintf(stderr, "coapgate-loadgen: %s\n", loaded.error().c_str());
        return 2;
      }
      keys = std::move(*loaded);
    } else {
      sockaddr_storage bootstrap_target{};
      socklen_t bootstrap_length = 0;
      if (!ParseTarget(o.keys.substr(10), &bootstrap_target, &bootstrap_length, o.routed) ||
          bootstrap_target.ss_family != AF_INET) {
        std::fprintf(stderr, "coapgate-loadgen: --keys bootstrap:127.x.y.z:PORT\n");
        return 2;
      }
      auto got = BootstrapKeys(*plan, bootstrap_target, bootstrap_length, o.bootstrap_in_flight,
                               uint64_t{o.setup_timeout_s} * 1'000'000'000, &bootstrap);
      if (!got) {
        std::fprintf(stderr, "coapgate-loadgen: %s\n", got.error().c_str());
        return 1;
      }
      keys = std::move(*got);
      std::fprintf(stderr,
                   "coapgate-loadgen: bootstrap: %lu keys, %lu refused, %lu timed out, %lu "
                   "retransmissions, %.3f s\n",
                   bootstrap.ok, bootstrap.refused, bootstrap.timeouts, bootstrap.retransmissions,
                   bootstrap.seconds);
      char text[256];
      std::snprintf(text, sizeof text,
                    ",\"bootstrap\":{\"requests\":%lu,\"ok\":%lu,\"refused\":%lu,"
                    "\"timeouts\":%lu,\"retransmissions\":%lu,\"seconds\":%.3f}",
                    bootstrap.requests, bootstrap.ok, bootstrap.refused, bootstrap.timeouts,
                    bootstrap.retransmissions, bootstrap.seconds);
      bootstrap_json = text;
    }
    wolfSSL_SetAllocators(&CountingMalloc, &CountingFree, &CountingRealloc);
    if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
      std::fprintf(stderr, "coapgate-loadgen: wolfSSL_Init failed\n");
      return 1;
    }
    config.dtls_keys = &keys;
    config.cipher = o.cipher;
    config.handshake_timeout_ms = o.handshake_timeout_ms;
  }

  struct sigaction action{};
  action.sa_handler = OnStopSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  struct sigaction end_load{};
  end_load.sa_handler = OnEndLoadSignal;
  sigaction(SIGUSR1, &end_load, nullptr);

  std::vector<std::unique_ptr<FleetWorker>> workers;
  size_t state_bytes = 0;
  for (unsigned t = 0; t < threads; ++t) {
    const uint32_t mine = o.devices / threads + (t < o.devices % threads ? 1 : 0);
    FleetConfig c = config;
    c.in_flight = std::max<uint64_t>(1, Share(in_flight_total, mine, o.devices));
    c.rate = o.rate * mine / o.devices;
    c.max_requests = o.max_requests == 0 ? UINT64_MAX : Share(o.max_requests, mine, o.devices);
    c.handshake_concurrency =
        static_cast<unsigned>(std::max<uint64_t>(1, Share(o.handshake_concurrency, mine, o.devices)));
    auto worker = FleetWorker::Create(c, t);
    if (!worker) {
      std::fprintf(stderr, "coapgate-loadgen: %s\n", worker.error().c_str());
      return 1;
    }
    state_bytes += (*worker)->state_bytes();
    workers.push_back(std::move(*worker));
  }

  // Runs `body` on every worker, with a progress line per second until all are done.
  const auto run_workers = [&](const std::function<void(FleetWorker*)>& body, bool handshakes,
                               uint64_t t0) {
    std::vector<std::thread> running;
    std::atomic<unsigned> done{0};
    for (auto& w : workers) {
      running.emplace_back([&, worker = w.get()] {
        body(worker);
        done.fetch_add(1, std::memory_order_release);
      });
    }
    uint64_t next_line = t0 + 1'000'000'000;
    uint64_t last = 0;
    for (unsigned second = 1; done.load(std::memory_order_acquire) < threads;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (MonotonicNs() < next_line) continue;
      uint64_t sent = 0, answered = 0, retransmissions = 0, timeouts = 0, in_flight = 0;
      uint64_t handshake_count = 0, failures = 0;
      for (auto& w : workers) {
        FleetProgress& p = w->progress();
        sent += p.sent.load(std::memory_order_relaxed);
        answered += p.answered.load(std::memory_order_relaxed);
        retransmissions += p.retransmissions.load(std::memory_order_relaxed);
        timeouts += p.timeouts.load(std::memory_order_relaxed);
        in_flight += p.in_flight.load(std::memory_order_relaxed);
        handshake_count += p.handshakes.load(std::memory_order_relaxed);
        failures += p.handshake_failures.load(std::memory_order_relaxed);
      }
      if (handshakes) {
        std::fprintf(stderr, "coapgate-loadgen: %3us handshakes=%lu (%lu/s) failures=%lu\n",
                     second++, handshake_count, handshake_count - last, failures);
        last = handshake_count;
      } else {
        std::fprintf(stderr,
                     "coapgate-loadgen: %3us sent=%lu answered=%lu (%lu/s) retransmissions=%lu "
                     "timeouts=%lu in_flight=%lu\n",
                     second++, sent, answered, answered - last, retransmissions, timeouts,
                     in_flight);
        last = answered;
      }
      next_line += 1'000'000'000;
    }
    for (std::thread& t : running) t.join();
  };

  // DTLS: every device handshakes once before the load (timed on its own).
  double handshake_phase_s = 0;
  int64_t session_heap_bytes = 0;
  if (o.dtls && !o.dtls_handshakes_only) {
    const int64_t heap_before = g_wolfssl_heap.load();  // the contexts
    const uint64_t t0 = MonotonicNs();
    const uint64_t deadline = t0 + uint64_t{o.setup_timeout_s} * 1'000'000'000;
    run_workers([&](FleetWorker* w) { w->Handshake(deadline); }, true, t0);
    handshake_phase_s = static_cast<double>(MonotonicNs() - t0) / 1e9;
    session_heap_bytes = g_wolfssl_heap.load() - heap_before;
    uint64_t established = 0;
    for (const auto& w : workers) established += w->dtls().established;
    std::fprintf(stderr, "coapgate-loadgen: %lu of %u DTLS sessions established in %.3f s\n",
                 established, o.devices, handshake_phase_s);
  }

  const int64_t rcvbuf_errors_before = UdpReceiveBufferErrors();
  const uint64_t start_ns = MonotonicNs();
  const uint64_t end_ns = start_ns + uint64_t{o.duration_s} * 1'000'000'000;
  if (o.dtls_handshakes_only) {
    run_workers([&](FleetWorker* w) { w->Churn(end_ns); }, true, start_ns);
  } else {
    run_workers([&](FleetWorker* w) { w->Run(start_ns, end_ns); }, false, start_ns);
  }
  if (ack_log_fd >= 0) close(ack_log_fd);
  const int64_t rcvbuf_errors_after = UdpReceiveBufferErrors();

  FleetCounters total;
  LatencyHistogram latency;
  DtlsCounters dtls;
  LatencyHistogram handshake_latency;
  for (const auto& w : workers) {
    dtls.Add(w->dtls());
    handshake_latency.Merge(w->handshake_latency());
  }
  uint64_t load_end_ns = start_ns, stop_ns = start_ns;
  for (const auto& w : workers) {
    total.Add(w->counters());
    latency.Merge(w->latency());
    load_end_ns = std::max(load_end_ns, w->load_end_ns());
    stop_ns = std::max(stop_ns, w->stop_ns());
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double cpu_s = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                       static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  const double duration_s = static_cast<double>(load_end_ns - start_ns) / 1e9;
  const double elapsed_s = static_cast<double>(stop_ns - start_ns) / 1e9;
  const int socket_rcvbuf = workers.front()->receive_buffer_bytes();
  workers.clear();  // frees the sessions and contexts
  if (o.dtls) wolfSSL_Cleanup();

  const auto dtls_common = [&] {
    char text[1024];
    std::snprintf(
        text, sizeof text,
        "\"handshakes\":%lu,\"handshake_failures\":%lu,\"handshake_timeouts\":%lu,"
        "\"handshake_retransmissions\":%lu,\"no_key\":%lu,"
        "\"handshake_latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"p999\":%.1f},"
        "\"datagrams_without_session\":%lu,"
        "\"keys\":\"%s\",\"cipher\":\"%s\",\"handshake_concurrency\":%u",
        dtls.handshakes, dtls.handshake_failures, dtls.handshake_timeouts,
        dtls.handshake_retransmissions, dtls.no_key, handshake_latency.Quantile(0.50) / 1e3,
        handshake_latency.Quantile(0.99) / 1e3, handshake_latency.Quantile(0.999) / 1e3,
        dtls.without_session, o.keys.rfind("csv:", 0) == 0 ? "csv" : "bootstrap", o.cipher.c_str(),
        o.handshake_concurrency);
    return std::string(text);
  };
  if (o.dtls_handshakes_only) {
    std::printf(
        "{\"mode\":\"dtls-handshakes\",%s,\"handshakes_unfinished\":%lu,"
        "\"handshake_rate\":%.1f,\"duration_s\":%.3f,\"elapsed_s\":%.3f,\"devices\":%u,"
        "\"first_address\":\"%s\",\"last_address\":\"%s\",\"threads\":%u,"
        "\"cpu_s\":%.2f,\"max_rss_kib\":%ld,\"malformed\":%lu,\"unmatched\":%lu,"
        "\"foreign\":%lu,\"send_errors\":%lu%s}\n",
        dtls_common().c_str(), dtls.handshakes_unfinished,
        duration_s > 0 ? static_cast<double>(dtls.handshakes) / duration_s : 0.0, duration_s,
        elapsed_s, o.devices, plan->AddressText(0).c_str(),
        plan->AddressText(o.devices - 1).c_str(), threads, cpu_s, usage.ru_maxrss,
        total.malformed, total.unmatched, total.foreign, total.send_errors,
        bootstrap_json.c_str());
    return dtls.handshakes > 0 ? 0 : 1;
  }
  std::string extra = bootstrap_json;
  if (o.dtls) {
    char text[512];
    std::snprintf(text, sizeof text,
                  ",\"established\":%lu,\"handshake_phase_s\":%.3f,\"handshake_rate\":%.1f,"
                  "\"sessions_lost\":%lu,\"write_errors\":%lu,\"oversize_records\":%lu,"
                  "\"session_heap_bytes\":%ld,\"heap_bytes_per_session\":%ld}",
                  dtls.established, handshake_phase_s,
                  handshake_phase_s > 0 ? static_cast<double>(dtls.handshakes) / handshake_phase_s
                                        : 0.0,
                  dtls.sessions_lost, dtls.write_errors, dtls.oversize,
                  static_cast<long>(session_heap_bytes),
                  dtls.established > 0
                      ? static_cast<long>(session_heap_bytes / static_cast<int64_t>(dtls.established))
                      : 0L);
    extra += ",\"dtls\":{" + dtls_common() + text;
  }

  std::string codes;
  for (unsigned i = 0; i < 256; ++i) {
    if (total.codes[i] == 0) continue;
    codes += codes.empty() ? "" : ",";
    codes += "\"" + CodeKey(static_cast<uint8_t>(i)) + "\":" + std::to_string(total.codes[i]);
  }
  if (total.rst > 0) codes += (codes.empty() ? "" : ",") + ("\"RST\":" + std::to_string(total.rst));
  const int64_t rcvbuf_errors = rcvbuf_errors_before < 0 || rcvbuf_errors_after < 0
                                    ? -1
                                    : rcvbuf_errors_after - rcvbuf_errors_before;
  std::printf(
      "{\"sent\":%lu,\"answered\":%lu,\"codes\":{%s},\"timeouts\":%lu,"
      "\"retransmissions\":%lu,\"duplicates\":%lu,\"empty_acks\":%lu,\"unfinished\":%lu,"
      "\"unmatched\":%lu,\"foreign\":%lu,\"malformed\":%lu,\"send_errors\":%lu,"
      "\"schedule_missed\":%lu,\"rate\":%.1f,\"target_rate\":%.1f,"
      "\"latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"p999\":%.1f},"
      "\"duration_s\":%.3f,\"elapsed_s\":%.3f,\"mode\":\"%s\",\"type\":\"%s\","
      "\"devices\":%u,\"first_address\":\"%s\",\"last_address\":\"%s\",\"window\":%u,"
      "\"in_flight\":%lu,\"threads\":%u,\"payload\":%zu,\"cpu_s\":%.2f,\"max_rss_kib\":%ld,"
      "\"state_bytes\":%zu,\"socket_rcvbuf\":%d,\"udp_rcvbuf_errors\":%ld,\"seed\":%lu%s}\n",
      total.sent, total.answered, codes.c_str(), total.timeouts, total.retransmissions,
      total.duplicates, total.empty_acks, total.unfinished, total.unmatched, total.foreign,
      total.malformed, total.send_errors, total.schedule_missed,
      duration_s > 0 ? static_cast<double>(total.answered_in_load) / duration_s : 0.0, o.rate,
      latency.Quantile(0.50) / 1e3, latency.Quantile(0.99) / 1e3, latency.Quantile(0.999) / 1e3,
      duration_s, elapsed_s, o.rate > 0 ? "open" : "closed", o.non ? "NON" : "CON", o.devices,
      plan->AddressText(0).c_str(), plan->AddressText(o.devices - 1).c_str(), o.window,
      o.rate > 0 ? uint64_t{o.devices} * o.window : in_flight_total, threads, o.payload, cpu_s,
      usage.ru_maxrss, state_bytes, socket_rcvbuf, static_cast<long>(rcvbuf_errors), o.seed,
      extra.c_str());
  return o.dtls && dtls.established == 0 ? 1 : 0;  // DTLS without one session: failed
}

}  // namespace
}  // namespace coapgate::loadgen

int main(int argc, char** argv) { return coapgate::loadgen::Main(argc, argv); }
