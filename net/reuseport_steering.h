// Source-address steering for an SO_REUSEPORT group: a classic BPF program, attached with
// SO_ATTACH_REUSEPORT_CBPF, that sends every datagram from one source IP address to one
// socket of the group whatever its source port. The kernel's own choice hashes the 4-tuple,
// so a device whose NAT rebinds to a new port would land on another shard, with another
// dedup table; steered, it stays where its state is.
//
// Thread contract: AttachSourceSteering is control plane (startup), any thread.
// ShardForAddress is a pure function (no allocation, no syscalls): safe from any thread, fit
// for the data plane. Both take the same `seed`; they agree exactly for every address.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string_view>

#include "common/result.h"

namespace coapgate::net {

// The kernel keeps at most U16_MAX sockets in one reuseport group.
inline constexpr uint32_t kMaxGroupSize = 65535;

enum class SteeringErrc : uint8_t {
  kBadGroupSize,    ///< group_size is 0 or above kMaxGroupSize
  kBadFamily,       ///< family is neither AF_INET nor AF_INET6
  kFamilyMismatch,  ///< the socket is not of `family` (or SO_DOMAIN failed: see error_number)
  kAttachFailed,    ///< setsockopt(SO_ATTACH_REUSEPORT_CBPF) failed: see error_number
};

[[nodiscard]] std::string_view ToString(SteeringErrc errc) noexcept;

struct SteeringError {
  SteeringErrc errc;
  int error_number;  ///< the errno of the failing call; 0 when no call failed
};

// Attaches the steering program to the reuseport group that `fd` belongs to. A group has one
// program: attaching through any member replaces it for all (and the group's sockets stay
// steered after `fd` closes, as long as one member is open). On failure nothing changes and
// the kernel keeps hashing the 4-tuple: the caller logs the errc and errno and carries on.
//
// The program returns hash(source address) % group_size, and the kernel uses that number as
// an index into the group's sockets **in the order they joined it** (bind order). So shard i
// must be the i-th socket bound to the address, for every listen address (each address:port
// is its own group, attached separately). Two kernel rules follow:
//  - an index >= the number of sockets actually in the group (a shard whose bind failed, or
//    traffic arriving while the shards are still binding) is not an error: the kernel falls
//    back to its 4-tuple hash for that datagram. The program itself returns group_size for a
//    packet that is neither IPv4 nor IPv6, to get exactly that fallback.
//  - closing a member moves the group's last socket into its slot, so the indexes no longer
//    match the shards; attach only once every shard's socket is bound and keep them open.
// group_size 1 attaches nothing (there is nothing to choose) and succeeds.
//
// The hash is murmur3's 32-bit finalizer chained over the address's 32-bit words (one for
// IPv4, four for IPv6) starting from `seed`, then taken modulo group_size; reuseport_steering.cc
// says why. The server should draw `seed` at random at startup, so that the spread cannot be
// aimed at one shard with chosen (or spoofed) source addresses; tests pass fixed seeds.
//
// REQUIRES: fd is a bound UDP socket of `family` with SO_REUSEPORT set. (The kernel also
// accepts an unbound one, giving it a group of its own; what becomes of that program when the
// socket then joins another group at bind is not relied on, nor tested.) AF_INET6 sockets
// may be dual-stack: an IPv4 datagram is steered like the same address as ::ffff:a.b.c.d.
[[nodiscard]] Result<void, SteeringError> AttachSourceSteering(int fd, uint32_t group_size,
                                                                int family,
                                                                uint32_t seed) noexcept;

// The index of the socket the attached program picks for a datagram from `address` (the
// source address as recvmsg reports it; the port is ignored), for a group of `shards`
// sockets steered with `seed`. IPv4, and IPv4-mapped IPv6 (::ffff:a.b.c.d), map alike.
// For an IP address and shards 0 or 1 the answer is 0. For any other family it is `shards`:
// out of range, the program's "let the kernel hash" value.
// REQUIRES: address points at a sockaddr_in for AF_INET and a sockaddr_in6 for AF_INET6.
[[nodiscard]] uint32_t ShardForAddress(const sockaddr* address, uint32_t shards,
                                       uint32_t seed) noexcept;

}  // namespace coapgate::net
