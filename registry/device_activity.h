// Device activity: what a device did last, as the shards saw it, in two packed 64-bit words
// per device, and the one vocabulary of reasons a request or a handshake was refused for. The
// same reason names appear in the logs (engine/device_log.h) and in the admin listener's
// GET /devices/{iccid} answer (docs/operations.md "Inspecting a device"), so a support ticket
// and a log search use the same words.
//
// The request word (written on every answered request of a registered device):
//   bits  0..31  last seen, Unix seconds (wall clock; 0 = never)
//   bits 32..39  the CoAP code of the last answer (0 = none yet)
//   bits 40..44  Reason of that answer (kNone for a 2.04)
//   bit  45      the last request came over a DTLS session
// The handshake word (written when a DTLS handshake of the device fails):
//   bits  0..31  when, Unix seconds (0 = never)
//   bits 32..36  Reason of the failure (one of the DTLS reasons)
//
// Pure values and functions here; where the words live and who writes them: DeviceRegistry
// (device_registry.h).
#pragma once

#include <cstdint>
#include <string_view>

namespace coapgate::registry {

enum class Reason : uint8_t {
  kNone = 0,            ///< accepted (2.04), or nothing to say
  kUnknownDevice,       ///< 4.01: no device has this source address / PSK identity
  kInactive,            ///< 4.01: the device is registered but not active
  kBadTopic,            ///< 4.00: the topic (Uri-Query t=) is invalid
  kBadRequest,          ///< 4.xx from the codec: malformed options, wrong method or path
  kPayloadTooLarge,     ///< 4.13: payload over coap.max_payload
  kBadPayload,          ///< 4.00: the Energy Saver template could not translate it (reject)
  kSinkDown,            ///< 5.03: a sink is known down (circuit open)
  kSinkRefused,         ///< 5.03: a sink refused the message
  kSinkTimeout,         ///< 5.03: the sinks did not answer within coap.response_budget_ms
  kQueueFull,           ///< 5.03: the in-flight slots or the publisher queue are full
  kExchangeMemoryFull,  ///< 5.03: the device's exchange memory has no free record
  kDraining,            ///< 5.03: the server is shutting down
  kBootstrapBusy,       ///< 5.03: the bootstrap worker's queue is full
  // DTLS handshakes (no CoAP code).
  kUnknownIdentity,     ///< the PSK identity is not a registered device
  kNoKey,               ///< a registered, active device with neither a CSV nor a generated key
  kWrongKey,            ///< the handshake's Finished did not decrypt: the device has another key
  kHandshakeTimeout,    ///< the peer stopped answering mid-handshake
  kHandshakeFailed,     ///< alert, protocol error or a wolfSSL failure
  kHandshakeLimit,      ///< dtls.max_handshakes unfinished handshakes already
  kPerSourceCap,        ///< dtls.max_handshakes_per_source from this address already
  kTableFull,           ///< dtls.max_sessions sessions, none idle enough to evict
  kCount,
};
static_assert(static_cast<unsigned>(Reason::kCount) <= 32, "a reason is 5 bits in the words");

// "unknown_device", "inactive", ... (one token, for log filters and JSON); "" for kNone.
[[nodiscard]] constexpr std::string_view ReasonName(Reason reason) noexcept {
  switch (reason) {
    case Reason::kNone: return "";
    case Reason::kUnknownDevice: return "unknown_device";
    case Reason::kInactive: return "inactive";
    case Reason::kBadTopic: return "bad_topic";
    case Reason::kBadRequest: return "bad_request";
    case Reason::kPayloadTooLarge: return "payload_too_large";
    case Reason::kBadPayload: return "bad_payload";
    case Reason::kSinkDown: return "sink_down";
    case Reason::kSinkRefused: return "sink_refused";
    case Reason::kSinkTimeout: return "sink_timeout";
    case Reason::kQueueFull: return "queue_full";
    case Reason::kExchangeMemoryFull: return "exchange_memory_full";
    case Reason::kDraining: return "draining";
    case Reason::kBootstrapBusy: return "bootstrap_busy";
    case Reason::kUnknownIdentity: return "unknown_identity";
    case Reason::kNoKey: return "no_key";
    case Reason::kWrongKey: return "wrong_key";
    case Reason::kHandshakeTimeout: return "handshake_timeout";
    case Reason::kHandshakeFailed: return "handshake_failed";
    case Reason::kHandshakeLimit: return "handshake_limit";
    case Reason::kPerSourceCap: return "per_source_cap";
    case Reason::kTableFull: return "table_full";
    case Reason::kCount: break;
  }
  return "unknown";
}

struct RequestActivity {
  uint32_t last_seen_s = 0;  ///< Unix seconds; 0 = never
  uint8_t code = 0;          ///< CoAP code byte of the last answer; 0 = none
  Reason reason = Reason::kNone;
  bool dtls = false;  ///< the last request came over a DTLS session

  friend bool operator==(const RequestActivity&, const RequestActivity&) = default;
};

struct HandshakeActivity {
  uint32_t failed_s = 0;  ///< Unix seconds of the last failure; 0 = never
  Reason reason = Reason::kNone;

  friend bool operator==(const HandshakeActivity&, const HandshakeActivity&) = default;
};

[[nodiscard]] constexpr uint64_t Pack(const RequestActivity& a) noexcept {
  return uint64_t{a.last_seen_s} | uint64_t{a.code} << 32 |
         (uint64_t{static_cast<uint8_t>(a.reason)} & 0x1f) << 40 | uint64_t{a.dtls} << 45;
}
[[nodiscard]] constexpr RequestActivity UnpackRequest(uint64_t w) noexcept {
  return {static_cast<uint32_t>(w), static_cast<uint8_t>(w >> 32),
          static_cast<Reason>((w >> 40) & 0x1f), ((w >> 45) & 1) != 0};
}
[[nodiscard]] constexpr uint64_t Pack(const HandshakeActivity& a) noexcept {
  return uint64_t{a.failed_s} | (uint64_t{static_cast<uint8_t>(a.reason)} & 0x1f) << 32;
}
[[nodiscard]] constexpr HandshakeActivity UnpackHandshake(uint64_t w) noexcept {
  return {static_cast<uint32_t>(w), static_cast<Reason>((w >> 32) & 0x1f)};
}

}  // namespace coapgate::registry
