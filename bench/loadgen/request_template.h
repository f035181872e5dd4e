// RequestTemplate: the bytes of a simulated device's request, built and checked once, then
// stamped per request with the MID, the token and the (device, sequence) digits.
//
// Layout: header (CON or NON, the method, MID) and a 4-byte token written by
// codec::EncodeMessage; Uri-Path segments and the Uri-Query "t=<topic>"; the payload marker and
// the payload "d=DDDDDDD s=SSSSSSSSSS " (device index and per-device sequence number, fixed
// width, so a checker that reads the sink can prove which acknowledged requests arrived),
// padded with letters to --payload bytes. Build() parses the result with the same codec the
// server uses (ParseMessage, DecodeRequest) and refuses a request the server would not route
// to a topic, so a typo in --topic fails at start-up, not as a run of 4.xx.
//
// Thread contract: immutable after Build; Write is const and may run on any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace coapgate::loadgen {

struct RequestSpec {
  bool confirmable = true;
  uint8_t method = 0x02;  // 0.02 POST
  std::string path = "/";  // '/'-separated Uri-Path segments; "/" = none
  std::string topic = "bench";  // Uri-Query t=<topic>; empty = no query
  size_t payload = 48;
};

inline constexpr size_t kTokenLength = 4;
inline constexpr size_t kDeviceDigits = 7;   // device indices below 10,000,000
inline constexpr size_t kSeqDigits = 10;     // any uint32_t
// "d=" + device + " s=" + sequence + " ": the smallest payload that proves delivery.
inline constexpr size_t kMinPayload = 2 + kDeviceDigits + 3 + kSeqDigits + 1;
inline constexpr size_t kMaxPayload = 1024;

class RequestTemplate {
 public:
  // Fails with a one-line reason (bad topic or path, payload out of range).
  [[nodiscard]] static Result<RequestTemplate, std::string> Build(const RequestSpec& spec);

  [[nodiscard]] size_t size() const noexcept { return bytes_.size(); }

  // Writes the whole request into out[0, size()). REQUIRES: out.size() >= size(),
  // device < 10^7.
  void Write(std::span<std::byte> out, uint32_t device, uint32_t seq, uint16_t mid,
             uint32_t token) const noexcept;

 private:
  explicit RequestTemplate(std::vector<std::byte> bytes, size_t payload_offset) noexcept
      : bytes_(std::move(bytes)), payload_offset_(payload_offset) {}

  std::vector<std::byte> bytes_;
  size_t payload_offset_;  // first payload byte ('d')
};

}  // namespace coapgate::loadgen
