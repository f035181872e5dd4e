// The session table: bounds, index, orders (handshake FIFO, established LRU), successors for
// rebooted devices, and ids that never reach a newer session.
#include "dtls/session_table.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace coapgate::dtls {
namespace {

constexpr uint32_t kNone = SessionTable::kNone;
using State = SessionTable::State;

PeerKey V4(uint32_t address, uint16_t port, uint16_t socket = 0) {
  sockaddr_in in;
  std::memset(&in, 0xee, sizeof in);  // stray bytes (sin_zero) must not matter
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  in.sin_addr.s_addr = htonl(address);
  PeerKey key;
  EXPECT_TRUE(MakePeerKey(reinterpret_cast<const sockaddr*>(&in), sizeof in, socket, &key));
  return key;
}

TEST(PeerKey, CanonicalPerAddressPortAndSocket) {
  EXPECT_EQ(V4(0x0a000001, 1000), V4(0x0a000001, 1000));
  EXPECT_NE(V4(0x0a000001, 1000), V4(0x0a000002, 1000));
  EXPECT_NE(V4(0x0a000001, 1000), V4(0x0a000001, 1001));
  EXPECT_NE(V4(0x0a000001, 1000), V4(0x0a000001, 1000, 1));

  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(1000);
  inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr);
  in6.sin6_flowinfo = 1234;  // not part of the identity
  PeerKey a, b;
  ASSERT_TRUE(MakePeerKey(reinterpret_cast<const sockaddr*>(&in6), sizeof in6, 0, &a));
  in6.sin6_flowinfo = 99;
  ASSERT_TRUE(MakePeerKey(reinterpret_cast<const sockaddr*>(&in6), sizeof in6, 0, &b));
  EXPECT_EQ(a, b);
  in6.sin6_scope_id = 3;
  ASSERT_TRUE(MakePeerKey(reinterpret_cast<const sockaddr*>(&in6), sizeof in6, 0, &b));
  EXPECT_NE(a, b);
}

TEST(PeerKey, RejectsOtherFamiliesAndShortLengths) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  PeerKey key;
  EXPECT_FALSE(MakePeerKey(reinterpret_cast<const sockaddr*>(&in), sizeof in - 1, 0, &key));
  in.sin_family = AF_UNIX;
  EXPECT_FALSE(MakePeerKey(reinterpret_cast<const sockaddr*>(&in), sizeof in, 0, &key));
  EXPECT_FALSE(MakePeerKey(nullptr, 0, 0, &key));
}

TEST(SessionTable, BoundedByCapacity) {
  SessionTable t(3, 1);
  EXPECT_NE(t.AddHandshake(V4(1, 1), 0), kNone);
  EXPECT_NE(t.AddHandshake(V4(2, 1), 0), kNone);
  EXPECT_NE(t.AddHandshake(V4(3, 1), 0), kNone);
  EXPECT_EQ(t.AddHandshake(V4(4, 1), 0), kNone);
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(t.handshakes(), 3u);
  t.Remove(t.Find(V4(2, 1)));
  EXPECT_EQ(t.Find(V4(2, 1)), kNone);
  EXPECT_NE(t.AddHandshake(V4(4, 1), 0), kNone);
  EXPECT_EQ(t.size(), 3u);
  EXPECT_GT(t.memory_bytes(), 0u);
}

TEST(SessionTable, IdsNeverReachANewerSession) {
  SessionTable t(1, 1);
  const uint32_t s = t.AddHandshake(V4(1, 1), 0);
  const SessionId first = t.IdOf(s);
  EXPECT_EQ(t.SlotOf(first), s);
  t.Remove(s);
  EXPECT_EQ(t.SlotOf(first), kNone);
  const uint32_t again = t.AddHandshake(V4(2, 2), 0);
  EXPECT_EQ(again, s);              // same slot...
  EXPECT_NE(t.IdOf(again), first);  // ...another id
  EXPECT_EQ(t.SlotOf(first), kNone);
  EXPECT_EQ(t.SlotOf(0), kNone);
  EXPECT_EQ(t.SlotOf(t.IdOf(again) + 5), kNone);  // slot out of range
}

TEST(SessionTable, HandshakesInStartOrderEstablishedInUseOrder) {
  SessionTable t(4, 7);
  const uint32_t a = t.AddHandshake(V4(1, 1), 10);
  const uint32_t b = t.AddHandshake(V4(2, 1), 20);
  const uint32_t c = t.AddHandshake(V4(3, 1), 30);
  EXPECT_EQ(t.OldestHandshake(), a);
  EXPECT_EQ(t.NextHandshake(a), b);
  EXPECT_EQ(t.NextHandshake(b), c);
  EXPECT_EQ(t.NextHandshake(c), kNone);

  t.Establish(b, 100);
  t.Establish(a, 110);
  EXPECT_EQ(t.state(a), State::kEstablished);
  EXPECT_EQ(t.handshakes(), 1u);
  EXPECT_EQ(t.established(), 2u);
  EXPECT_EQ(t.OldestHandshake(), c);
  EXPECT_EQ(t.LeastRecentlyUsed(), b);
  t.Touch(b, 200);
  EXPECT_EQ(t.LeastRecentlyUsed(), a);
  EXPECT_EQ(t.stamp(b), 200u);
  t.Touch(b, 300);  // already the most recent
  EXPECT_EQ(t.LeastRecentlyUsed(), a);
  t.Remove(a);
  EXPECT_EQ(t.LeastRecentlyUsed(), b);
}

TEST(SessionTable, SuccessorReplacesAfterItsPredecessorIsRemoved) {
  SessionTable t(3, 9);
  const PeerKey key = V4(5, 5);
  const uint32_t old = t.AddHandshake(key, 0);
  t.Establish(old, 1);
  const uint32_t heir = t.AddSuccessor(old, 2);
  ASSERT_NE(heir, kNone);
  EXPECT_EQ(t.Find(key), old);  // the index keeps the live session
  EXPECT_EQ(t.successor(old), heir);
  EXPECT_EQ(t.predecessor(heir), old);
  EXPECT_EQ(t.predecessor(old), kNone);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.handshakes(), 1u);

  t.Remove(old);  // handshake completed: the endpoint removes the old session first
  EXPECT_EQ(t.Find(key), heir);
  EXPECT_EQ(t.predecessor(heir), kNone);
  t.Establish(heir, 3);
  EXPECT_EQ(t.LeastRecentlyUsed(), heir);
  EXPECT_EQ(t.size(), 1u);
}

TEST(SessionTable, FailedSuccessorLeavesTheOldSession) {
  SessionTable t(3, 9);
  const PeerKey key = V4(5, 5);
  const uint32_t old = t.AddHandshake(key, 0);
  t.Establish(old, 1);
  const uint32_t heir = t.AddSuccessor(old, 2);
  t.Remove(heir);
  EXPECT_EQ(t.successor(old), kNone);
  EXPECT_EQ(t.Find(key), old);
  EXPECT_EQ(t.state(old), State::kEstablished);
  EXPECT_EQ(t.size(), 1u);
}

TEST(SessionTable, ManyPeers) {
  constexpr uint32_t kPeers = 20000;
  SessionTable t(kPeers, 12345);
  for (uint32_t i = 0; i < kPeers; ++i) ASSERT_NE(t.AddHandshake(V4(i, 5684), i), kNone);
  EXPECT_EQ(t.AddHandshake(V4(kPeers, 5684), 0), kNone);
  for (uint32_t i = 0; i < kPeers; i += 2) t.Remove(t.Find(V4(i, 5684)));
  for (uint32_t i = 0; i < kPeers; ++i) {
    const uint32_t s = t.Find(V4(i, 5684));
    if (i % 2 == 0) {
      EXPECT_EQ(s, kNone);
    } else {
      ASSERT_NE(s, kNone);
      EXPECT_EQ(t.key(s), V4(i, 5684));
    }
  }
  EXPECT_EQ(t.size(), kPeers / 2);
  // The handshake FIFO skips the removed ones and stays in start order.
  uint64_t last = 0;
  uint32_t count = 0;
  for (uint32_t h = t.OldestHandshake(); h != kNone; h = t.NextHandshake(h), ++count) {
    EXPECT_GE(t.stamp(h), last);
    last = t.stamp(h);
  }
  EXPECT_EQ(count, kPeers / 2);
}

}  // namespace
}  // namespace coapgate::dtls
