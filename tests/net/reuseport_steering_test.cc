// Source-address steering against the real kernel: SO_REUSEPORT groups on loopback, clients
// on many 127/8 (and, with IPV6_FREEBIND, fd00::/8) source addresses, several source ports
// each. Every datagram is awaited before the next is sent, so nothing is dropped and nothing
// depends on timing; each wait is bounded by a poll timeout.
#include "net/reuseport_steering.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace coapgate::net {
namespace {

constexpr uint32_t kSeed = 0x5eed1234;
constexpr int kPortsPerAddress = 3;     // a NAT rebinding, twice
constexpr int kReceiveTimeoutMs = 2000;  // a loopback datagram is queued before sendto returns

class Fd {
 public:
  explicit Fd(int fd = -1) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd& operator=(Fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  [[nodiscard]] int get() const noexcept { return fd_; }

 private:
  int fd_;
};

struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;

  [[nodiscard]] const sockaddr* get() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage);
  }
  [[nodiscard]] int family() const noexcept { return storage.ss_family; }
};

Address V4(uint32_t host_order, uint16_t port = 0) {
  Address a;
  auto* in = reinterpret_cast<sockaddr_in*>(&a.storage);
  in->sin_family = AF_INET;
  in->sin_addr.s_addr = htonl(host_order);
  in->sin_port = htons(port);
  a.length = sizeof(sockaddr_in);
  return a;
}

Address V6(const char* literal, uint16_t port = 0) {
  Address a;
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  in6->sin6_family = AF_INET6;
  EXPECT_EQ(inet_pton(AF_INET6, literal, &in6->sin6_addr), 1) << literal;
  in6->sin6_port = htons(port);
  a.length = sizeof(sockaddr_in6);
  return a;
}

uint16_t PortOf(const Address& a) {
  if (a.family() == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_port);
  }
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&a.storage)->sin6_port);
}

void SetPort(Address& a, uint16_t port) {
  if (a.family() == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&a.storage)->sin_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in6*>(&a.storage)->sin6_port = htons(port);
  }
}

std::string ToText(const Address& a) {
  char text[INET6_ADDRSTRLEN] = {};
  const void* raw = a.family() == AF_INET
                        ? static_cast<const void*>(
                              &reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_addr)
                        : static_cast<const void*>(
                              &reinterpret_cast<const sockaddr_in6*>(&a.storage)->sin6_addr);
  inet_ntop(a.family(), raw, text, sizeof(text));
  return std::string(text) + ":" + std::to_string(PortOf(a));
}

enum class V6Only : uint8_t { kYes, kNo };

// `size` UDP sockets with SO_REUSEPORT, bound in order to `where` (port 0: the first picks
// one and the others join it), so socket i is index i of the kernel's group.
std::vector<Fd> BindGroup(Address& where, uint32_t size, V6Only v6only = V6Only::kYes) {
  std::vector<Fd> group;
  for (uint32_t i = 0; i < size; ++i) {
    Fd fd(socket(where.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    EXPECT_GE(fd.get(), 0) << std::strerror(errno);
    const int one = 1;
    const int v6only_value = v6only == V6Only::kYes ? 1 : 0;
    EXPECT_EQ(setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    if (where.family() == AF_INET6) {
      EXPECT_EQ(setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only_value,
                           sizeof(v6only_value)),
                0);
    }
    EXPECT_EQ(bind(fd.get(), where.get(), where.length), 0)
        << ToText(where) << ": " << std::strerror(errno);
    if (PortOf(where) == 0) {
      Address bound;
      bound.length = sizeof(bound.storage);
      EXPECT_EQ(getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound.storage), &bound.length),
                0);
      SetPort(where, PortOf(bound));
    }
    group.push_back(std::move(fd));
  }
  return group;
}

// A client socket bound to `source` (port 0). IPV6_FREEBIND lets it take an fd00::/8
// address lo does not have; the datagram still goes to ::1 over lo.
Fd BindClient(const Address& source, bool freebind) {
  Fd fd(socket(source.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return fd;
  const int one = 1;
  if (freebind && setsockopt(fd.get(), IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one)) != 0) {
    return Fd();
  }
  if (bind(fd.get(), source.get(), source.length) != 0) return Fd();
  return fd;
}

struct Arrival {
  int socket_index = -1;  ///< -1: nothing arrived within the timeout
  Address seen;           ///< the source address the group socket reported
};

// Sends one datagram carrying `tag` from `client` to `to` and reports which group socket got
// it. Bounded: one poll per stray datagram, at most a few.
Arrival SendAndLocate(const Fd& client, const Address& to, const std::vector<Fd>& group,
                      uint32_t tag) {
  Arrival arrival;
  if (sendto(client.get(), &tag, sizeof(tag), 0, to.get(), to.length) !=
      static_cast<ssize_t>(sizeof(tag))) {
    ADD_FAILURE() << "sendto: " << std::strerror(errno);
    return arrival;
  }
  std::vector<pollfd> fds;
  for (const Fd& fd : group) fds.push_back({fd.get(), POLLIN, 0});
  for (int attempt = 0; attempt < 4; ++attempt) {
    if (poll(fds.data(), fds.size(), kReceiveTimeoutMs) <= 0) return arrival;
    for (size_t i = 0; i < fds.size(); ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      uint32_t got = 0;
      Address from;
      from.length = sizeof(from.storage);
      const ssize_t n = recvfrom(fds[i].fd, &got, sizeof(got), MSG_DONTWAIT,
                                 reinterpret_cast<sockaddr*>(&from.storage), &from.length);
      if (n == static_cast<ssize_t>(sizeof(got)) && got == tag) {
        arrival.socket_index = static_cast<int>(i);
        arrival.seen = from;
      }
    }
    if (arrival.socket_index >= 0) return arrival;
  }
  return arrival;
}

struct SteeringReport {
  std::map<int, int> addresses_per_socket;  ///< socket index -> source addresses it got
  int addresses_sent = 0;
};

// From every source, kPortsPerAddress datagrams from distinct source ports; checks that all
// of one address's datagrams reach one socket, the one ShardForAddress predicts.
SteeringReport SendFromEach(const std::vector<Address>& sources, const Address& to,
                            const std::vector<Fd>& group, bool freebind) {
  SteeringReport report;
  const auto size = static_cast<uint32_t>(group.size());
  uint32_t tag = 0;
  for (const Address& source : sources) {
    std::vector<Fd> clients;  // all open at once, so their ports differ
    for (int p = 0; p < kPortsPerAddress; ++p) clients.push_back(BindClient(source, freebind));
    if (clients.front().get() < 0) {
      ADD_FAILURE() << "cannot bind a client to " << ToText(source);
      continue;
    }
    const uint32_t predicted = ShardForAddress(source.get(), size, kSeed);
    std::set<int> sockets;
    std::set<uint16_t> ports;
    for (const Fd& client : clients) {
      const Arrival arrival = SendAndLocate(client, to, group, ++tag);
      if (arrival.socket_index < 0) {
        ADD_FAILURE() << "nothing arrived from " << ToText(source);
        continue;
      }
      sockets.insert(arrival.socket_index);
      ports.insert(PortOf(arrival.seen));
      // The address as the server sees it (for a dual-stack socket, ::ffff:a.b.c.d) predicts
      // the same socket as the address the client bound.
      EXPECT_EQ(ShardForAddress(arrival.seen.get(), size, kSeed), predicted)
          << ToText(arrival.seen);
    }
    EXPECT_EQ(ports.size(), static_cast<size_t>(kPortsPerAddress)) << ToText(source);
    if (sockets.empty()) continue;
    EXPECT_EQ(sockets.size(), 1U) << ToText(source) << " reached several sockets";
    EXPECT_EQ(static_cast<uint32_t>(*sockets.begin()), predicted) << ToText(source);
    ++report.addresses_per_socket[*sockets.begin()];
    ++report.addresses_sent;
  }
  return report;
}

// 320 loopback sources: 127.0.0.2..127.0.0.121, then 127.0.x.y and 127.x.y.z spread out.
std::vector<Address> LoopbackSourcesV4() {
  std::vector<Address> sources;
  for (uint32_t i = 0; i < 120; ++i) sources.push_back(V4(0x7f000002 + i));
  for (uint32_t i = 0; i < 100; ++i) sources.push_back(V4(0x7f000000 | (1 + i) << 8 | (7 * i + 1)));
  for (uint32_t i = 0; i < 100; ++i) {
    sources.push_back(V4(0x7f000000 | (1 + i) << 16 | (3 * i) << 8 | (i + 10)));
  }
  return sources;
}

void ExpectSteeredV4(uint32_t group_size) {
  Address listen = V4(INADDR_LOOPBACK);
  const std::vector<Fd> group = BindGroup(listen, group_size);
  ASSERT_EQ(group.size(), group_size);
  // Any member will do: the program belongs to the group.
  const auto attached = AttachSourceSteering(group.back().get(), group_size, AF_INET, kSeed);
  ASSERT_TRUE(attached) << ToString(attached.error().errc) << ": "
                        << std::strerror(attached.error().error_number);

  const SteeringReport report = SendFromEach(LoopbackSourcesV4(), listen, group, false);
  ASSERT_EQ(report.addresses_sent, 320);
  EXPECT_EQ(report.addresses_per_socket.size(), group_size) << "a socket got no address";
}

TEST(ReuseportSteering, TwoSocketsSteerEachIpv4SourceToItsPredictedSocket) {
  ExpectSteeredV4(2);
}

TEST(ReuseportSteering, FourSocketsSteerEachIpv4SourceToItsPredictedSocket) {
  ExpectSteeredV4(4);
}

// fd00:5eed::<i> (ULA, never routed: the datagrams stay on lo) when IPV6_FREEBIND is there,
// and ::1 always.
std::vector<Address> LoopbackSourcesV6(bool* freebind) {
  std::vector<Address> sources = {V6("::1")};
  const Fd probe = BindClient(V6("fd00:5eed::1"), true);
  *freebind = probe.get() >= 0;
  if (!*freebind) return sources;
  for (int i = 1; i <= 256; ++i) {
    char text[64];
    std::snprintf(text, sizeof(text), "fd00:5eed::%x:%x", i * 37, i);
    sources.push_back(V6(text));
  }
  return sources;
}

void ExpectSteeredV6(uint32_t group_size) {
  Address listen = V6("::1");
  const std::vector<Fd> group = BindGroup(listen, group_size);
  ASSERT_EQ(group.size(), group_size);
  const auto attached = AttachSourceSteering(group.front().get(), group_size, AF_INET6, kSeed);
  ASSERT_TRUE(attached) << ToString(attached.error().errc) << ": "
                        << std::strerror(attached.error().error_number);

  bool freebind = false;
  const std::vector<Address> sources = LoopbackSourcesV6(&freebind);
  const SteeringReport report = SendFromEach(sources, listen, group, freebind);
  ASSERT_EQ(report.addresses_sent, static_cast<int>(sources.size()));
  if (!freebind) {
    GTEST_SKIP() << "no IPV6_FREEBIND: only ::1 was checked (one address, several ports)";
  }
  EXPECT_EQ(report.addresses_per_socket.size(), group_size) << "a socket got no address";
}

TEST(ReuseportSteering, TwoSocketsSteerEachIpv6SourceToItsPredictedSocket) {
  ExpectSteeredV6(2);
}

TEST(ReuseportSteering, FourSocketsSteerEachIpv6SourceToItsPredictedSocket) {
  ExpectSteeredV6(4);
}

// An AF_INET6 group that receives IPv4 (bound to ::ffff:127.0.0.1, not IPv6-only): the
// program reads an IPv4 header and recvfrom reports ::ffff:a.b.c.d; both predict alike.
TEST(ReuseportSteering, DualStackSocketsSteerIpv4SourcesLikeIpv4) {
  constexpr uint32_t kGroupSize = 4;
  Address listen = V6("::ffff:127.0.0.1");
  const std::vector<Fd> group = BindGroup(listen, kGroupSize, V6Only::kNo);
  ASSERT_EQ(group.size(), kGroupSize);
  const auto attached = AttachSourceSteering(group[1].get(), kGroupSize, AF_INET6, kSeed);
  ASSERT_TRUE(attached) << std::strerror(attached.error().error_number);

  const SteeringReport report =
      SendFromEach(LoopbackSourcesV4(), V4(INADDR_LOOPBACK, PortOf(listen)), group, false);
  ASSERT_EQ(report.addresses_sent, 320);
  EXPECT_EQ(report.addresses_per_socket.size(), kGroupSize);
}

// The program is told of 4 sockets but the group has 2: indexes 2 and 3 are out of range and
// the kernel falls back to its own hash for those datagrams, which still arrive.
TEST(ReuseportSteering, IndexBeyondTheGroupFallsBackToTheKernelHash) {
  Address listen = V4(INADDR_LOOPBACK);
  const std::vector<Fd> group = BindGroup(listen, 2);
  ASSERT_TRUE(AttachSourceSteering(group[0].get(), 4, AF_INET, kSeed));
  uint32_t tag = 0;
  int beyond = 0;
  for (const Address& source : LoopbackSourcesV4()) {
    const Fd client = BindClient(source, false);
    ASSERT_GE(client.get(), 0);
    const Arrival arrival = SendAndLocate(client, listen, group, ++tag);
    ASSERT_GE(arrival.socket_index, 0) << ToText(source);
    const uint32_t predicted = ShardForAddress(source.get(), 4, kSeed);
    if (predicted < 2) {
      EXPECT_EQ(static_cast<uint32_t>(arrival.socket_index), predicted) << ToText(source);
    } else {
      ++beyond;
    }
  }
  EXPECT_GT(beyond, 0);
}

TEST(ReuseportSteering, GroupOfOneAttachesNothing) {
  Address listen = V4(INADDR_LOOPBACK);
  const std::vector<Fd> group = BindGroup(listen, 1);
  EXPECT_TRUE(AttachSourceSteering(group[0].get(), 1, AF_INET, kSeed));
}

TEST(ReuseportSteering, RejectsBadArguments) {
  Address listen = V4(INADDR_LOOPBACK);
  const std::vector<Fd> group = BindGroup(listen, 2);
  const int fd = group[0].get();
  EXPECT_EQ(AttachSourceSteering(fd, 0, AF_INET, kSeed).error().errc,
            SteeringErrc::kBadGroupSize);
  EXPECT_EQ(AttachSourceSteering(fd, kMaxGroupSize + 1, AF_INET, kSeed).error().errc,
            SteeringErrc::kBadGroupSize);
  EXPECT_EQ(AttachSourceSteering(fd, 2, AF_UNIX, kSeed).error().errc, SteeringErrc::kBadFamily);
  EXPECT_EQ(AttachSourceSteering(fd, 2, AF_INET6, kSeed).error().errc,
            SteeringErrc::kFamilyMismatch);
  const auto closed = AttachSourceSteering(-1, 2, AF_INET, kSeed);
  EXPECT_EQ(closed.error().errc, SteeringErrc::kFamilyMismatch);
  EXPECT_EQ(closed.error().error_number, EBADF);
}

// A bound socket without SO_REUSEPORT has no group: the kernel refuses, errno says EINVAL.
TEST(ReuseportSteering, SocketWithoutReuseportIsRefusedWithItsErrno) {
  Fd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  Address any = V4(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd.get(), any.get(), any.length), 0);
  const auto attached = AttachSourceSteering(fd.get(), 2, AF_INET, kSeed);
  ASSERT_FALSE(attached);
  EXPECT_EQ(attached.error().errc, SteeringErrc::kAttachFailed);
  EXPECT_EQ(attached.error().error_number, EINVAL);
}

// ShardForAddress alone (no sockets).

TEST(ShardForAddress, IgnoresThePortAndFoldsIpv4MappedIpv6) {
  for (uint32_t host = 0x7f000001; host < 0x7f000001 + 64; ++host) {
    const Address a = V4(host, 5683);
    const Address b = V4(host, 40000);
    char mapped[64];
    std::snprintf(mapped, sizeof(mapped), "::ffff:127.0.0.%u", host & 0xff);
    const Address c = V6(mapped, 1);
    for (uint32_t shards : {2U, 3U, 4U, 7U}) {
      EXPECT_EQ(ShardForAddress(a.get(), shards, kSeed), ShardForAddress(b.get(), shards, kSeed));
      EXPECT_EQ(ShardForAddress(a.get(), shards, kSeed), ShardForAddress(c.get(), shards, kSeed));
      EXPECT_LT(ShardForAddress(a.get(), shards, kSeed), shards);
    }
  }
}

TEST(ShardForAddress, DegenerateGroupsAndOtherFamilies) {
  const Address a = V4(0x0a000001);
  EXPECT_EQ(ShardForAddress(a.get(), 0, kSeed), 0U);
  EXPECT_EQ(ShardForAddress(a.get(), 1, kSeed), 0U);
  sockaddr_storage unix_address{};
  unix_address.ss_family = AF_UNIX;
  EXPECT_EQ(ShardForAddress(reinterpret_cast<const sockaddr*>(&unix_address), 4, kSeed), 4U);
}

TEST(ShardForAddress, TheSeedChangesTheMapping) {
  int moved = 0;
  for (uint32_t host = 0x7f000001; host < 0x7f000001 + 256; ++host) {
    const Address a = V4(host);
    moved += ShardForAddress(a.get(), 4, 1) != ShardForAddress(a.get(), 4, 2);
  }
  EXPECT_GT(moved, 128);  // about 3/4 of them
}

// 65,536 consecutive addresses (the host bits a fleet differs in) spread as evenly as a
// random assignment would: every shard within 5 standard deviations of its share (binomial),
// for power-of-two and other group sizes. Deterministic: a fixed seed, no randomness.
void ExpectEvenSpread(const std::vector<Address>& addresses) {
  for (uint32_t shards : {2U, 3U, 4U, 6U, 8U, 16U}) {
    std::vector<int> counts(shards, 0);
    for (const Address& a : addresses) ++counts[ShardForAddress(a.get(), shards, kSeed)];
    const double fair = static_cast<double>(addresses.size()) / shards;
    const double sigma = std::sqrt(fair * (1.0 - 1.0 / shards));
    for (uint32_t s = 0; s < shards; ++s) {
      EXPECT_NEAR(counts[s], fair, 5 * sigma) << shards << " shards, shard " << s;
    }
  }
}

TEST(ShardForAddress, SpreadsLoopbackAndFleetRangesEvenly) {
  std::vector<Address> loopback;
  std::vector<Address> fleet;
  for (uint32_t i = 0; i < 65536; ++i) {
    loopback.push_back(V4(0x7f000000 | i));  // 127.0.0.0/16
    fleet.push_back(V4(0x64400000 | i));     // 100.64.0.0/16, a carrier-grade NAT range
  }
  ExpectEvenSpread(loopback);
  ExpectEvenSpread(fleet);
}

TEST(ShardForAddress, SpreadsIpv6InterfaceIdsAndPrefixesEvenly) {
  std::vector<Address> hosts;     // one /64, interface IDs ::0..::ffff
  std::vector<Address> prefixes;  // 2001:db8:<i>::1, one host in each of 65,536 /48s
  for (uint32_t i = 0; i < 65536; ++i) {
    char text[64];
    std::snprintf(text, sizeof(text), "2001:db8:0:1::%x", i);
    hosts.push_back(V6(text));
    std::snprintf(text, sizeof(text), "2001:db8:%x::1", i);
    prefixes.push_back(V6(text));
  }
  ExpectEvenSpread(hosts);
  ExpectEvenSpread(prefixes);
}

}  // namespace
}  // namespace coapgate::net
