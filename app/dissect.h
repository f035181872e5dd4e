// Dissect: a human-readable account of what coapgate's codec makes of one datagram (header,
// options, payload, the protocol's verdict, and the exact reply bytes). Backs
// `coapgate dissect`; control plane only (allocates freely).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "codec/triage.h"

namespace coapgate::app {

[[nodiscard]] std::string Dissect(std::span<const std::byte> datagram,
                                  const codec::TriageLimits& limits);

}  // namespace coapgate::app
