// Listening UDP sockets for the shards: one per shard per listen address, all bound to the
// same address with SO_REUSEPORT so the kernel spreads devices over the shards by 4-tuple
// (a device's datagrams therefore always reach the same shard and its dedup table).
//
// Control plane (startup); any thread.
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace coapgate::net {

// A non-blocking, close-on-exec UDP socket bound to host:port (an IPv4 or IPv6 literal; IPv6
// sockets are IPv6-only so "[::]" and "0.0.0.0" can both be listened on). The receive buffer
// is raised to `receive_buffer_bytes` (beyond net.core.rmem_max when running as root).
// Errors name the address and the failing call.
[[nodiscard]] Result<int, std::string> OpenUdpSocket(const std::string& host, uint16_t port,
                                                     uint32_t receive_buffer_bytes);

// The port a bound socket got (how "port 0" is resolved before the other shards bind).
[[nodiscard]] uint16_t LocalPort(int fd) noexcept;

}  // namespace coapgate::net
