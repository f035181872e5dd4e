// ClientHelloFlood: a spoofed-ClientHello flood, as an attacker forging source addresses sends
// it. Each hello is a hand-built cookieless DTLS 1.2 ClientHello (with --flood-forged every
// other one carries a random 32-byte cookie) from a fresh source address in 127.64.0.0/10 and
// a fresh port, paced at `rate` per second. A server doing RFC 6347 §4.2.1's stateless cookie
// exchange answers each with a HelloVerifyRequest and keeps nothing; the HVRs that come back
// before a socket is recycled are counted (a ring of kSockets sockets stays open for that).
//
// The addresses never overlap the fleet's (address_plan.h starts at 127.1.0.1 and a million
// devices end below 127.17.0.0).
//
// Thread contract: Run() blocks its caller until the count is sent, `deadline_ns` passes or
// `stop` is set; it owns every socket it opens and closes them all before returning.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

namespace coapgate::loadgen {

struct FloodOptions {
  uint64_t count = 100'000;  // ClientHellos to send
  unsigned rate = 20'000;    // per second, in all
  bool forged_cookies = false;
};

struct FloodResult {
  uint64_t sent = 0;
  uint64_t hvr_received = 0;    // handshake records of type hello_verify_request
  uint64_t other_received = 0;  // anything else that came back
  uint64_t socket_errors = 0;   // socket() or bind() failed: nothing sent for that hello
  uint64_t send_errors = 0;
  double seconds = 0;
};

class ClientHelloFlood {
 public:
  static constexpr unsigned kSockets = 256;
  static constexpr uint32_t kFirstAddress = (127u << 24) | (64u << 16);  // 127.64.0.0
  static constexpr uint32_t kAddresses = 1u << 22;                       // .. 127.127.255.255
  static constexpr size_t kMaxHello = 128;

  ClientHelloFlood(const sockaddr_in& target, FloodOptions options) noexcept
      : target_(target), options_(options) {}

  [[nodiscard]] FloodResult Run(uint64_t deadline_ns, const std::atomic<bool>& stop) noexcept;

  // Writes hello number `n` (its record sequence number) into `out`; returns its length.
  // `random` supplies the 32 random bytes (and the cookie's 32 when `forged_cookie`).
  [[nodiscard]] static size_t BuildHello(uint64_t n, bool forged_cookie, uint64_t (&random)[8],
                                         std::span<uint8_t, kMaxHello> out) noexcept;

 private:
  sockaddr_in target_;
  FloodOptions options_;
};

}  // namespace coapgate::loadgen
