// The protocol limits every room agrees on, defined once: the registry validates against
// them, the hand-off slots are sized by them, the DTLS endpoint's key buffers hold them.
#pragma once

#include <cstddef>

namespace coapgate {

// ICCID digits (ITU-T E.118: 18 to 22, the PSK identity of a DTLS device).
inline constexpr size_t kMinIccidLength = 18;
inline constexpr size_t kMaxIccidLength = 22;
// IMSI digits (ITU-T E.212: 5 to 15).
inline constexpr size_t kMinImsiLength = 5;
inline constexpr size_t kMaxImsiLength = 15;
// A device's pre-shared key in bytes, as the devices file or the bootstrap gives it.
inline constexpr size_t kMaxPskLength = 64;
// The topic `t`: 255 bytes of Uri-Query value minus the "t=" prefix.
inline constexpr size_t kMaxTopicLength = 253;

}  // namespace coapgate
