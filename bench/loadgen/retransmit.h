// RetransmitPolicy: RFC 7252 §4.2/§4.8 message-layer reliability for a simulated device's
// confirmable requests. A new exchange waits a random time in [ACK_TIMEOUT, ACK_TIMEOUT ×
// ACK_RANDOM_FACTOR]; each time the wait ends without an answer the request is sent again with
// the same MID and token and the wait doubles; after MAX_RETRANSMIT retransmissions, the end of
// the last wait gives the exchange up (a timeout). NON requests and --no-retransmit use the
// first wait only. Waits are whole milliseconds (the timer wheel's resolution).
//
// Thread contract: one per worker (it owns a random generator); not synchronized.
#pragma once

#include <cstdint>

namespace coapgate::loadgen {

struct RetransmitParams {
  uint32_t ack_timeout_ms = 2000;   // ACK_TIMEOUT
  double ack_random_factor = 1.5;   // ACK_RANDOM_FACTOR, >= 1
  uint32_t max_retransmit = 4;      // MAX_RETRANSMIT
  bool enabled = true;              // false: --no-retransmit
};

// Bounds the CLI enforces so that every wait fits the wheel's 32-bit millisecond clock.
inline constexpr uint32_t kMaxAckTimeoutMs = 60'000;
inline constexpr uint32_t kMaxMaxRetransmit = 8;

class RetransmitPolicy {
 public:
  RetransmitPolicy(const RetransmitParams& params, uint64_t seed) noexcept;

  // The first wait of a new exchange, in ms.
  [[nodiscard]] uint32_t InitialWaitMs() noexcept;
  // Whether a request that has been retransmitted `done` times may be sent again.
  [[nodiscard]] bool MayRetransmit(unsigned done) const noexcept {
    return params_.enabled && done < params_.max_retransmit;
  }
  // The exponential back-off: the wait after a retransmission.
  [[nodiscard]] static uint32_t NextWaitMs(uint32_t wait_ms) noexcept { return wait_ms * 2; }
  // MAX_TRANSMIT_WAIT (§4.8.2), 93 s with the defaults: the longest a confirmable exchange
  // can last. Also how long a device waits for a separate response after an empty ACK.
  [[nodiscard]] uint32_t MaxTransmitWaitMs() const noexcept;

  [[nodiscard]] const RetransmitParams& params() const noexcept { return params_; }

 private:
  RetransmitParams params_;
  uint32_t spread_ms_;  // ACK_TIMEOUT × (ACK_RANDOM_FACTOR - 1)
  uint64_t state_;      // xorshift64*
};

}  // namespace coapgate::loadgen
