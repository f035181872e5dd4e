#include "bench/loadgen/retransmit.h"

#include <cmath>

namespace coapgate::loadgen {

RetransmitPolicy::RetransmitPolicy(const RetransmitParams& params, uint64_t seed) noexcept
    : params_(params),
      spread_ms_(static_cast<uint32_t>(
          std::lround(params.ack_timeout_ms * (params.ack_random_factor - 1.0)))),
      state_(seed | 1) {}

uint32_t RetransmitPolicy::InitialWaitMs() noexcept {
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  const uint64_t r = state_ * 0x2545F4914F6CDD1DULL;
  return params_.ack_timeout_ms + static_cast<uint32_t>((r >> 32) % (uint64_t{spread_ms_} + 1));
}

uint32_t RetransmitPolicy::MaxTransmitWaitMs() const noexcept {
  const double waits = std::ldexp(1.0, static_cast<int>(params_.max_retransmit) + 1) - 1;
  return static_cast<uint32_t>(params_.ack_timeout_ms * waits * params_.ack_random_factor);
}

}  // namespace coapgate::loadgen
