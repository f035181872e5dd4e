#include "engine/dedup_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "net/ip_address.h"

namespace coapgate::engine {
namespace {

using Verdict = DedupTable::Verdict;
using State = DedupTable::State;

constexpr uint8_t kChanged = 0x44;             // 2.04
constexpr uint8_t kServiceUnavailable = 0xa3;  // 5.03
constexpr uint8_t kAck = 2;
constexpr uint8_t kNon = 1;

DedupKey Key(const char* ip, uint16_t port, uint16_t mid) {
  const auto address = net::IpAddress::Parse(ip);
  EXPECT_TRUE(address.has_value()) << ip;
  return DedupKey{address.value_or(net::IpAddress{}).bytes(), port, mid};
}

std::vector<std::byte> Token(std::initializer_list<int> bytes) {
  std::vector<std::byte> out;
  for (int b : bytes) out.push_back(static_cast<std::byte>(b));
  return out;
}

DedupTable::Limits SmallLimits(uint32_t capacity) {
  return {.capacity = capacity, .con_lifetime_s = 247, .non_lifetime_s = 145, .hash_seed = 42};
}

bool SameHandle(DedupTable::Handle a, DedupTable::Handle b) {
  return a.slot == b.slot && a.generation == b.generation;
}

TEST(DedupTable, NewThenPendingDuplicateThenDoneDuplicateReplaysTheResponse) {
  DedupTable table(SmallLimits(16));
  const DedupKey key = Key("10.1.2.3", 40000, 0x1234);
  const auto token = Token({0xde, 0xad, 0xbe, 0xef});

  const auto first = table.Admit(key, token, /*confirmable=*/true, 1000);
  ASSERT_EQ(first.verdict, Verdict::kNew);
  ASSERT_NE(first.entry, nullptr);
  EXPECT_EQ(first.entry->state, State::kPending);
  EXPECT_EQ(table.size(), 1u);

  const auto pending = table.Admit(key, token, true, 1001);
  EXPECT_EQ(pending.verdict, Verdict::kDuplicatePending);
  EXPECT_TRUE(SameHandle(pending.handle, first.handle));
  EXPECT_EQ(table.stats().hits_pending, 1u);

  ASSERT_TRUE(table.Complete(first.handle, kChanged, kAck, 0x1234, 0));
  // A second response must never replace the one duplicates may already have received.
  EXPECT_FALSE(table.Complete(first.handle, kServiceUnavailable, kAck, 0x1234, 30));

  const auto done = table.Admit(key, token, true, 1002);
  ASSERT_EQ(done.verdict, Verdict::kDuplicateDone);
  ASSERT_NE(done.entry, nullptr);
  EXPECT_EQ(done.entry->state, State::kDone);
  EXPECT_EQ(done.entry->response_code, kChanged);
  EXPECT_EQ(done.entry->response_type, kAck);
  EXPECT_EQ(done.entry->response_message_id, 0x1234);
  EXPECT_EQ(done.entry->max_age, 0);
  EXPECT_EQ(done.entry->expires_at, 1000u + 247u);
  ASSERT_EQ(done.entry->token_bytes().size(), token.size());
  EXPECT_TRUE(std::equal(token.begin(), token.end(), done.entry->token_bytes().begin()));
  EXPECT_EQ(table.stats().hits_done, 1u);
  EXPECT_EQ(table.size(), 1u);
  EXPECT_TRUE(table.CheckInvariants());
}

TEST(DedupTable, CachesA503WithMaxAgeAndANonResponse) {
  DedupTable table(SmallLimits(4));
  const DedupKey key = Key("2001:db8::7", 5683, 9);
  const auto token = Token({1});
  const auto a = table.Admit(key, token, /*confirmable=*/false, 10);
  ASSERT_TRUE(table.Complete(a.handle, kServiceUnavailable, kNon, 0x7777, 42));
  const auto d = table.Admit(key, token, false, 11);
  ASSERT_EQ(d.verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(d.entry->response_code, kServiceUnavailable);
  EXPECT_EQ(d.entry->response_type, kNon);
  EXPECT_EQ(d.entry->response_message_id, 0x7777);
  EXPECT_EQ(d.entry->max_age, 42);
}

TEST(DedupTable, DifferentTokenIsANewExchangeAndCountsAMismatch) {
  DedupTable table(SmallLimits(16));
  const DedupKey key = Key("10.1.2.3", 40000, 7);
  const auto a = table.Admit(key, Token({1, 2}), true, 100);
  ASSERT_TRUE(table.Complete(a.handle, kChanged, kAck, 7, 0));

  const auto b = table.Admit(key, Token({3, 4}), true, 101);  // the device rebooted
  EXPECT_EQ(b.verdict, Verdict::kNew);
  EXPECT_EQ(table.stats().token_mismatches, 1u);
  EXPECT_EQ(table.Get(a.handle), nullptr);
  ASSERT_NE(table.Get(b.handle), nullptr);
  EXPECT_EQ(table.Get(b.handle)->state, State::kPending);
  EXPECT_EQ(table.Get(b.handle)->expires_at, 101u + 247u);
  EXPECT_EQ(table.size(), 1u);

  // The new token is now the one that deduplicates; the old one is a mismatch again.
  EXPECT_EQ(table.Admit(key, Token({3, 4}), true, 102).verdict, Verdict::kDuplicatePending);
  EXPECT_EQ(table.Admit(key, Token({1, 2}), true, 103).verdict, Verdict::kNew);
  EXPECT_EQ(table.stats().token_mismatches, 2u);
  EXPECT_TRUE(table.CheckInvariants());
}

TEST(DedupTable, EmptyTokenMatchesOnlyAnEmptyToken) {
  DedupTable table(SmallLimits(16));
  const DedupKey key = Key("10.0.0.1", 1, 1);
  ASSERT_EQ(table.Admit(key, {}, true, 0).verdict, Verdict::kNew);
  EXPECT_EQ(table.Admit(key, {}, true, 0).verdict, Verdict::kDuplicatePending);
  EXPECT_EQ(table.Admit(key, Token({0}), true, 0).verdict, Verdict::kNew);
  EXPECT_EQ(table.stats().token_mismatches, 1u);
}

TEST(DedupTable, ConEntryExpiresAfterConLifetime) {
  DedupTable table(SmallLimits(16));
  const DedupKey key = Key("10.0.0.1", 5683, 1);
  const auto token = Token({9});
  const auto a = table.Admit(key, token, true, 1000);
  ASSERT_TRUE(table.Complete(a.handle, kChanged, kAck, 1, 0));
  EXPECT_EQ(table.Admit(key, token, true, 1000 + 246).verdict, Verdict::kDuplicateDone);
  const auto b = table.Admit(key, token, true, 1000 + 247);
  EXPECT_EQ(b.verdict, Verdict::kNew);
  EXPECT_EQ(table.stats().expired, 1u);
  EXPECT_EQ(table.stats().token_mismatches, 0u);
  EXPECT_EQ(table.Get(a.handle), nullptr);
  EXPECT_EQ(table.size(), 1u);
  EXPECT_TRUE(table.CheckInvariants());
}

TEST(DedupTable, NonEntryExpiresAfterTheShorterNonLifetime) {
  DedupTable table(SmallLimits(16));
  const DedupKey key = Key("10.0.0.1", 5683, 2);
  const auto token = Token({9});
  const auto a = table.Admit(key, token, /*confirmable=*/false, 1000);
  ASSERT_TRUE(table.Complete(a.handle, kChanged, kNon, 0x55, 0));
  EXPECT_EQ(table.Admit(key, token, false, 1000 + 144).verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(table.Admit(key, token, false, 1000 + 145).verdict, Verdict::kNew);
  EXPECT_EQ(table.stats().expired, 1u);
}

TEST(DedupTable, NonBehindALongerLivedConIsExpiredOnLookup) {
  DedupTable table(SmallLimits(16));
  const DedupKey con = Key("10.0.0.1", 5683, 1);
  const DedupKey non = Key("10.0.0.2", 5683, 1);
  const auto token = Token({9});
  ASSERT_TRUE(table.Complete(table.Admit(con, token, true, 0).handle, kChanged, kAck, 1, 0));
  ASSERT_TRUE(table.Complete(table.Admit(non, token, false, 1).handle, kChanged, kNon, 2, 0));

  // The head (CON, expires at 247) blocks reclamation of the NON entry (expires at 146)...
  EXPECT_EQ(table.ExpireUntil(200), 0u);
  EXPECT_EQ(table.size(), 2u);
  // ...but the NON entry is not answered from once its lifetime has passed.
  EXPECT_EQ(table.Admit(non, token, false, 200).verdict, Verdict::kNew);
  EXPECT_EQ(table.Admit(con, token, true, 200).verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(table.stats().expired, 1u);
  EXPECT_TRUE(table.CheckInvariants());
}

TEST(DedupTable, ExpireUntilReclaimsFromTheHeadWithinItsBudget) {
  DedupTable table(SmallLimits(16));
  std::vector<DedupTable::Handle> handles;
  for (uint16_t mid = 0; mid < 10; ++mid) {
    const auto a = table.Admit(Key("10.0.0.1", 5683, mid), Token({1}), true, mid);
    ASSERT_TRUE(table.Complete(a.handle, kChanged, kAck, mid, 0));
    handles.push_back(a.handle);
  }
  EXPECT_EQ(table.ExpireUntil(246), 0u);  // nothing has lived 247 s yet
  EXPECT_EQ(table.ExpireUntil(247 + 5, /*max_entries=*/2), 2u);  // six are due; budget 2
  EXPECT_EQ(table.size(), 8u);
  EXPECT_EQ(table.ExpireUntil(247 + 5), 4u);
  EXPECT_EQ(table.size(), 4u);
  EXPECT_EQ(table.stats().expired, 6u);
  for (size_t i = 0; i < handles.size(); ++i) {
    EXPECT_EQ(table.Get(handles[i]) == nullptr, i < 6) << i;
  }
  EXPECT_EQ(table.ExpireUntil(10'000), 4u);
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(table.ExpireUntil(20'000), 0u);
  EXPECT_TRUE(table.CheckInvariants());
}

TEST(DedupTable, ExpiryWorksAcrossTheClockWrap) {
  DedupTable table(SmallLimits(4));
  const DedupKey key = Key("10.0.0.1", 5683, 3);
  const auto token = Token({3});
  const uint32_t start = UINT32_MAX - 100;
  ASSERT_TRUE(table.Complete(table.Admit(key, token, true, start).handle, kChanged, kAck, 3, 0));
  EXPECT_EQ(table.ExpireUntil(start + 200), 0u);  // wrapped: now is 99
  EXPECT_EQ(table.Admit(key, token, true, start + 200).verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(table.Admit(key, token, true, start + 247).verdict, Verdict::kNew);
}

TEST(DedupTable, EvictsTheOldestDoneEntryWhenFull) {
  DedupTable table(SmallLimits(4));
  std::vector<DedupTable::Handle> handles;
  for (uint16_t mid = 0; mid < 4; ++mid) {
    const auto a = table.Admit(Key("10.0.0.1", 5683, mid), Token({1}), true, 0);
    ASSERT_EQ(a.verdict, Verdict::kNew);
    ASSERT_TRUE(table.Complete(a.handle, kChanged, kAck, mid, 0));
    handles.push_back(a.handle);
  }
  const auto fifth = table.Admit(Key("10.0.0.1", 5683, 4), Token({1}), true, 1);
  ASSERT_EQ(fifth.verdict, Verdict::kNew);
  EXPECT_EQ(table.stats().evictions, 1u);
  EXPECT_EQ(table.size(), 4u);
  EXPECT_EQ(table.Get(handles[0]), nullptr);  // the oldest went
  for (size_t i = 1; i < 4; ++i) EXPECT_NE(table.Get(handles[i]), nullptr);
  // Its retransmission is forwarded again (and evicts the next oldest).
  EXPECT_EQ(table.Admit(Key("10.0.0.1", 5683, 0), Token({1}), true, 2).verdict, Verdict::kNew);
  EXPECT_EQ(table.stats().evictions, 2u);
  EXPECT_EQ(table.Get(handles[1]), nullptr);
  EXPECT_EQ(table.Admit(Key("10.0.0.1", 5683, 3), Token({1}), true, 3).verdict,
            Verdict::kDuplicateDone);
  EXPECT_TRUE(table.CheckInvariants());
}

TEST(DedupTable, RefusesWhenTheOldestEntryIsPending) {
  DedupTable table(SmallLimits(2));
  const DedupKey a = Key("10.0.0.1", 5683, 1);
  const DedupKey b = Key("10.0.0.1", 5683, 2);
  const DedupKey c = Key("10.0.0.1", 5683, 3);
  const auto token = Token({7});
  const auto ha = table.Admit(a, token, true, 0);  // stays pending
  ASSERT_TRUE(table.Complete(table.Admit(b, token, true, 0).handle, kChanged, kAck, 2, 0));

  const auto refused = table.Admit(c, token, true, 1);
  EXPECT_EQ(refused.verdict, Verdict::kFull);
  EXPECT_EQ(refused.entry, nullptr);
  EXPECT_EQ(table.Get(refused.handle), nullptr);
  EXPECT_EQ(table.stats().full_refusals, 1u);
  EXPECT_EQ(table.stats().evictions, 0u);
  // Nothing was stored or changed.
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(table.Admit(a, token, true, 1).verdict, Verdict::kDuplicatePending);
  EXPECT_EQ(table.Admit(b, token, true, 1).verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(table.Admit(c, token, true, 1).verdict, Verdict::kFull);

  // Once the head is done it can be evicted.
  ASSERT_TRUE(table.Complete(ha.handle, kChanged, kAck, 1, 0));
  EXPECT_EQ(table.Admit(c, token, true, 2).verdict, Verdict::kNew);
  EXPECT_EQ(table.stats().evictions, 1u);
  EXPECT_EQ(table.Get(ha.handle), nullptr);
  EXPECT_TRUE(table.CheckInvariants());
}

TEST(DedupTable, AnExpiredPendingHeadIsReclaimedAtTheBound) {
  DedupTable table(SmallLimits(1));
  const auto token = Token({7});
  const auto a = table.Admit(Key("10.0.0.1", 5683, 1), token, false, 0);  // never completed
  EXPECT_EQ(table.Admit(Key("10.0.0.1", 5683, 2), token, false, 144).verdict, Verdict::kFull);
  EXPECT_EQ(table.Admit(Key("10.0.0.1", 5683, 2), token, false, 145).verdict, Verdict::kNew);
  EXPECT_EQ(table.stats().expired, 1u);
  EXPECT_EQ(table.stats().evictions, 0u);
  EXPECT_FALSE(table.Complete(a.handle, kChanged, kNon, 1, 0));
}

TEST(DedupTable, StaleHandlesFailSafelyAfterEvictionAndSlotReuse) {
  DedupTable table(SmallLimits(1));
  const auto token = Token({7});
  const auto a = table.Admit(Key("10.0.0.1", 5683, 1), token, true, 0);
  ASSERT_TRUE(table.Complete(a.handle, kChanged, kAck, 1, 0));
  const auto b = table.Admit(Key("10.0.0.1", 5683, 2), token, true, 0);  // evicts a
  ASSERT_EQ(b.verdict, Verdict::kNew);
  ASSERT_EQ(b.handle.slot, a.handle.slot);  // same slot, new occupancy

  EXPECT_EQ(table.Get(a.handle), nullptr);
  EXPECT_FALSE(table.Complete(a.handle, kServiceUnavailable, kAck, 1, 60));
  table.Forget(a.handle);
  // b is untouched by the stale calls.
  const auto* eb = table.Get(b.handle);
  ASSERT_NE(eb, nullptr);
  EXPECT_EQ(eb->state, State::kPending);
  EXPECT_EQ(eb->key.message_id, 2);

  EXPECT_EQ(table.Get(DedupTable::kNoHandle), nullptr);
  EXPECT_EQ(table.Get({5, 0}), nullptr);  // out of range
  EXPECT_FALSE(table.Complete(DedupTable::kNoHandle, kChanged, kAck, 0, 0));
  table.Forget(DedupTable::kNoHandle);
  EXPECT_EQ(table.Get({0, 0}), nullptr);
  EXPECT_EQ(table.Get(DedupTable::Handle{}), nullptr);
  EXPECT_TRUE(table.CheckInvariants());
}

// Callers keep a default Handle{} in request state before admission: it must never reach
// the first entry stored in slot 0.
TEST(DedupTable, DefaultHandleNeverNamesAnEntry) {
  DedupTable table(SmallLimits(1));
  const auto a = table.Admit(Key("10.0.0.1", 5683, 1), Token({7}), true, 0);
  ASSERT_EQ(a.handle.slot, 0u);
  const DedupTable::Handle none{};
  EXPECT_EQ(table.Get(none), nullptr);
  EXPECT_EQ(table.Get({0, 0}), nullptr);
  EXPECT_FALSE(table.Complete(none, kChanged, kAck, 1, 0));
  EXPECT_FALSE(table.Complete({0, 0}, kChanged, kAck, 1, 0));
  table.Forget({0, 0});
  ASSERT_NE(table.Get(a.handle), nullptr);
  EXPECT_EQ(table.Get(a.handle)->state, State::kPending);
}

TEST(DedupTable, ForgetMakesTheRetransmissionNew) {
  DedupTable table(SmallLimits(4));
  const DedupKey key = Key("10.0.0.1", 5683, 1);
  const auto token = Token({7});
  const auto a = table.Admit(key, token, true, 0);
  table.Forget(a.handle);
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(table.Get(a.handle), nullptr);
  table.Forget(a.handle);  // twice: no-op

  const auto b = table.Admit(key, token, true, 1);
  EXPECT_EQ(b.verdict, Verdict::kNew);
  ASSERT_TRUE(table.Complete(b.handle, kChanged, kAck, 1, 0));
  table.Forget(b.handle);  // done: the cached response must survive
  EXPECT_EQ(table.Admit(key, token, true, 2).verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(table.stats().token_mismatches, 0u);
  EXPECT_TRUE(table.CheckInvariants());
}

TEST(DedupTable, ForgottenSlotsAreReclaimedAtTheHead) {
  DedupTable table(SmallLimits(2));
  const auto token = Token({7});
  for (uint16_t mid = 0; mid < 1000; ++mid) {
    const auto a = table.Admit(Key("10.0.0.1", 5683, mid), token, true, 0);
    ASSERT_EQ(a.verdict, Verdict::kNew) << mid;
    table.Forget(a.handle);
  }
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(table.stats().evictions, 0u);
  EXPECT_EQ(table.stats().full_refusals, 0u);
  EXPECT_TRUE(table.CheckInvariants());
}

TEST(DedupTable, TokenMismatchReplacementDoesNotLeakRingSlots) {
  DedupTable table(SmallLimits(2));
  const DedupKey key = Key("10.0.0.1", 5683, 1);
  for (int i = 0; i < 1000; ++i) {
    // Each reboot replaces the previous (pending or done) entry; its old slot is reclaimed
    // when it reaches the head, here by the next insert at the bound.
    const auto a = table.Admit(key, Token({i & 0xff, i >> 8}), true, 0);
    ASSERT_EQ(a.verdict, Verdict::kNew) << i;
    if (i % 2 == 0) {
      ASSERT_TRUE(table.Complete(a.handle, kChanged, kAck, 1, 0));
    }
    ASSERT_EQ(table.size(), 1u);
  }
  EXPECT_EQ(table.stats().token_mismatches, 999u);
  EXPECT_EQ(table.stats().evictions, 0u);
  EXPECT_EQ(table.stats().full_refusals, 0u);
  EXPECT_EQ(table.ExpireUntil(0), 1u);  // the one removed slot still queued is reclaimed
  EXPECT_TRUE(table.CheckInvariants());
}

// The documented cost of "remove and append": a removed slot queued behind a pending head is
// not reused, so a replacement at the bound is refused like any other insert, and changes
// nothing.
TEST(DedupTable, ReplacementAtTheBoundBehindAPendingHeadIsRefused) {
  DedupTable table(SmallLimits(2));
  const DedupKey key = Key("10.0.0.1", 5683, 1);
  const DedupKey other = Key("10.0.0.9", 5683, 1);
  const auto head = table.Admit(other, Token({0}), true, 0);  // pending
  ASSERT_EQ(table.Admit(key, Token({1}), true, 0).verdict, Verdict::kNew);
  EXPECT_EQ(table.Admit(key, Token({2}), true, 1).verdict, Verdict::kFull);
  EXPECT_EQ(table.stats().token_mismatches, 0u);
  EXPECT_EQ(table.Admit(key, Token({1}), true, 1).verdict, Verdict::kDuplicatePending);

  ASSERT_TRUE(table.Complete(head.handle, kChanged, kAck, 1, 0));
  EXPECT_EQ(table.Admit(key, Token({2}), true, 2).verdict, Verdict::kNew);
  EXPECT_EQ(table.stats().token_mismatches, 1u);
  EXPECT_EQ(table.stats().evictions, 1u);  // the head made room
  EXPECT_EQ(table.size(), 1u);
  EXPECT_TRUE(table.CheckInvariants());
}

TEST(DedupTable, AddressFamilyPortAndMidAllDistinguishKeys) {
  DedupTable table(SmallLimits(16));
  const auto token = Token({1});
  const DedupKey keys[] = {
      Key("10.0.0.1", 5683, 100),         // base
      Key("::a00:1", 5683, 100),          // IPv4-compatible, not v4-mapped: another address
      Key("2001:db8::a00:1", 5683, 100),  // IPv6 sharing the low 32 bits
      Key("10.0.0.2", 5683, 100),         // address
      Key("10.0.0.1", 5684, 100),         // port
      Key("10.0.0.1", 5683, 101),         // MID
      Key("10.0.0.1", 100, 5683),         // port and MID swapped
  };
  for (const DedupKey& key : keys) {
    EXPECT_EQ(table.Admit(key, token, true, 0).verdict, Verdict::kNew);
  }
  EXPECT_EQ(table.size(), std::size(keys));
  // The v4-mapped spelling is the same peer as the dotted quad.
  EXPECT_EQ(table.Admit(Key("::ffff:10.0.0.1", 5683, 100), token, true, 0).verdict,
            Verdict::kDuplicatePending);
  for (const DedupKey& key : keys) {
    EXPECT_EQ(table.Admit(key, token, true, 0).verdict, Verdict::kDuplicatePending);
  }
  // DTLS keys: a packed identity and port 0.
  DedupKey identity{};
  identity.peer = {'d', 'e', 'v', '-', '0', '0', '1'};
  identity.message_id = 100;
  EXPECT_EQ(table.Admit(identity, token, true, 0).verdict, Verdict::kNew);
}

TEST(DedupTable, HashDependsOnEveryFieldAndTheSeed) {
  const DedupKey base = Key("10.0.0.1", 5683, 100);
  const uint64_t h = HashDedupKey(base, 1);
  EXPECT_EQ(h, HashDedupKey(base, 1));
  EXPECT_NE(h, HashDedupKey(base, 2));
  DedupKey k = base;
  k.port ^= 1;
  EXPECT_NE(h, HashDedupKey(k, 1));
  k = base;
  k.message_id ^= 0x8000;
  EXPECT_NE(h, HashDedupKey(k, 1));
  for (size_t i = 0; i < 16; ++i) {
    k = base;
    k.peer[i] ^= 1;
    EXPECT_NE(h, HashDedupKey(k, 1)) << i;
  }
}

// Keys whose home bucket (in a table of `index_slots`) is `home`, found by brute force.
std::vector<DedupKey> KeysWithHome(size_t home, size_t index_slots, uint64_t seed, size_t n) {
  std::vector<DedupKey> out;
  DedupKey key = Key("192.0.2.1", 5683, 0);
  for (uint32_t mid = 0; mid <= 0xffff && out.size() < n; ++mid) {
    key.message_id = static_cast<uint16_t>(mid);
    if ((HashDedupKey(key, seed) & (index_slots - 1)) == home) out.push_back(key);
  }
  return out;
}

// Capacity 8 (16 index positions), every key homed on one of four adjacent buckets that wrap
// around the end of the index: long shared runs, so backward-shift deletion moves entries on
// nearly every removal, across the wrap.
TEST(DedupTable, BackwardShiftDeletionKeepsCollidingKeysReachable) {
  const auto limits = SmallLimits(8);
  DedupTable table(limits);
  ASSERT_EQ(table.index_slots(), 16u);
  std::vector<DedupKey> keys;
  for (size_t home : {14, 15, 0, 1}) {
    const auto some = KeysWithHome(home, 16, limits.hash_seed, 12);
    ASSERT_EQ(some.size(), 12u);
    keys.insert(keys.end(), some.begin(), some.end());
  }
  std::mt19937 rng(7);
  std::map<size_t, DedupTable::Handle> live;  // key number -> handle
  const auto token = Token({5});
  for (int step = 0; step < 20'000; ++step) {
    const size_t k = rng() % keys.size();
    const auto it = live.find(k);
    if (it != live.end() && rng() % 2 == 0) {
      table.Forget(it->second);  // only pending ones go; done ones stay
      if (table.Get(it->second) == nullptr) live.erase(it);
    } else {
      const auto a = table.Admit(keys[k], token, true, 0);
      if (a.verdict == Verdict::kNew) {
        live[k] = a.handle;
        if (rng() % 3 == 0) {
          ASSERT_TRUE(table.Complete(a.handle, kChanged, kAck, 0, 0));
        }
      } else if (a.verdict != Verdict::kFull) {
        ASSERT_TRUE(it != live.end()) << "duplicate of a key that is not live";
      }
    }
    // Drop the ones the table evicted.
    for (auto l = live.begin(); l != live.end();) {
      l = table.Get(l->second) == nullptr ? live.erase(l) : std::next(l);
    }
    ASSERT_TRUE(table.CheckInvariants()) << "step " << step;
    ASSERT_EQ(table.size(), live.size());
    for (const auto& [n, handle] : live) {  // every live key still found (a read-only hit)
      const auto hit = table.Admit(keys[n], token, true, 0);
      ASSERT_NE(hit.verdict, Verdict::kNew) << "step " << step << " lost key " << n;
      ASSERT_TRUE(SameHandle(hit.handle, handle));
    }
  }
  EXPECT_GT(table.stats().evictions, 0u);
  EXPECT_GT(table.stats().full_refusals, 0u);
}

TEST(DedupTable, MemoryPerEntryIncludingTheIndexIsAtMost64Bytes) {
  static_assert(sizeof(DedupTable::Entry) == 48);
  for (uint32_t capacity : {1u, 2u, 3u, 5u, 8u, 9u, 100u, 1000u, 1025u, 65537u, 1u << 20}) {
    DedupTable table(SmallLimits(capacity));
    EXPECT_LE(table.MemoryBytes(), 64u * table.capacity()) << capacity;
    EXPECT_GE(table.index_slots(), 2u * capacity);
  }
  DedupTable pow2(SmallLimits(1u << 20));
  EXPECT_EQ(pow2.MemoryBytes() / pow2.capacity(), 56u);
}

// --- Randomized comparison with a reference model -------------------------------------------
//
// The model states the policy with std containers: a map of live entries and a deque of ring
// slots in arrival order (a slot is dead once its key's live entry has another id).

using ModelKey = std::tuple<std::array<uint8_t, 16>, uint16_t, uint16_t>;

ModelKey ToModel(const DedupKey& k) { return {k.peer, k.port, k.message_id}; }

class Model {
 public:
  struct Live {
    uint64_t id;
    std::vector<std::byte> token;
    bool done = false;
    uint32_t expires_at;
    uint8_t code = 0, type = 0;
    uint16_t mid = 0, max_age = 0;
  };
  struct Result {
    Verdict verdict;
    uint64_t id;  // of the new or matching entry
  };

  explicit Model(const DedupTable::Limits& limits) : limits_(limits) {}

  Result Admit(const DedupKey& key, const std::vector<std::byte>& token, bool con, uint32_t now) {
    const ModelKey k = ToModel(key);
    auto it = live_.find(k);
    bool replace_expired = false;
    if (it != live_.end()) {
      replace_expired = now >= it->second.expires_at;
      if (!replace_expired && it->second.token == token) {
        ++(it->second.done ? stats.hits_done : stats.hits_pending);
        return {it->second.done ? Verdict::kDuplicateDone : Verdict::kDuplicatePending,
                it->second.id};
      }
    }
    if (ring_.size() == limits_.capacity) {
      const auto& [fk, fid] = ring_.front();
      const Live* head = Alive(fk, fid);
      const bool ok = head == nullptr || (it != live_.end() && it->second.id == fid) ||
                      head->done || now >= head->expires_at;
      if (!ok) {
        ++stats.full_refusals;
        return {Verdict::kFull, 0};
      }
    }
    if (it != live_.end()) {
      ++(replace_expired ? stats.expired : stats.token_mismatches);
      live_.erase(it);
    }
    if (ring_.size() == limits_.capacity) {
      const auto [fk, fid] = ring_.front();
      if (const Live* head = Alive(fk, fid)) {
        ++(now >= head->expires_at ? stats.expired : stats.evictions);
        live_.erase(fk);
      }
      ring_.pop_front();
    }
    const uint64_t id = next_id_++;
    live_[k] = Live{.id = id,
                    .token = token,
                    .expires_at = now + (con ? limits_.con_lifetime_s : limits_.non_lifetime_s)};
    ring_.emplace_back(k, id);
    return {Verdict::kNew, id};
  }

  bool Complete(const ModelKey& k, uint64_t id, uint8_t code, uint8_t type, uint16_t mid,
                uint16_t max_age) {
    Live* e = Find(k, id);
    if (e == nullptr || e->done) return false;
    *e = Live{.id = id, .token = e->token, .done = true, .expires_at = e->expires_at,
              .code = code, .type = type, .mid = mid, .max_age = max_age};
    return true;
  }

  void Forget(const ModelKey& k, uint64_t id) {
    Live* e = Find(k, id);
    if (e != nullptr && !e->done) live_.erase(k);
  }

  size_t ExpireUntil(uint32_t now, size_t max_entries) {
    size_t n = 0;
    while (n < max_entries && !ring_.empty()) {
      const auto [fk, fid] = ring_.front();
      if (const Live* head = Alive(fk, fid)) {
        if (now < head->expires_at) break;
        ++stats.expired;
        live_.erase(fk);
      }
      ring_.pop_front();
      ++n;
    }
    return n;
  }

  Live* Find(const ModelKey& k, uint64_t id) {
    auto it = live_.find(k);
    return it != live_.end() && it->second.id == id ? &it->second : nullptr;
  }
  size_t size() const { return live_.size(); }

  DedupTable::Stats stats{};

 private:
  const Live* Alive(const ModelKey& k, uint64_t id) const {
    auto it = live_.find(k);
    return it != live_.end() && it->second.id == id ? &it->second : nullptr;
  }

  DedupTable::Limits limits_;
  std::map<ModelKey, Live> live_;
  std::deque<std::pair<ModelKey, uint64_t>> ring_;
  uint64_t next_id_ = 1;
};

struct RandomCase {
  uint32_t capacity;
  size_t distinct_keys;
};

class DedupTableRandom : public testing::TestWithParam<RandomCase> {};

uint32_t TestSeed() {
  if (const char* s = std::getenv("COAPGATE_TEST_SEED")) {
    return static_cast<uint32_t>(std::strtoul(s, nullptr, 0));
  }
  return std::random_device{}();
}

TEST_P(DedupTableRandom, MatchesTheReferenceModel) {
  const RandomCase param = GetParam();
  const uint32_t seed = TestSeed();
  std::cout << "[ seed     ] COAPGATE_TEST_SEED=" << seed << "\n";
  SCOPED_TRACE("COAPGATE_TEST_SEED=" + std::to_string(seed));
  std::mt19937 rng(seed);

  // Short lifetimes so that expiry, eviction and refusal all happen within 100k operations.
  const DedupTable::Limits limits{.capacity = param.capacity, .con_lifetime_s = 30,
                                  .non_lifetime_s = 12, .hash_seed = rng()};
  DedupTable table(limits);
  Model model(limits);

  // A key pool mixing IPv4/IPv6, ports and MIDs; each key has a usual token and sometimes a
  // different one (a "reboot") or none.
  std::vector<DedupKey> keys;
  for (size_t i = 0; i < param.distinct_keys; ++i) {
    DedupKey k{};
    if (rng() % 2 == 0) {
      k.peer = Key("10.0.0.0", 0, 0).peer;
      k.peer[15] = static_cast<uint8_t>(rng() % 4);
    } else {
      k.peer[0] = 0x20;
      k.peer[15] = static_cast<uint8_t>(rng() % 4);
    }
    k.port = static_cast<uint16_t>(5683 + rng() % 3);
    k.message_id = static_cast<uint16_t>(rng() % 8);
    keys.push_back(k);
  }
  const std::vector<std::vector<std::byte>> tokens = {Token({1, 2, 3, 4}), Token({9}), {}};

  struct Issued {
    DedupTable::Handle handle;
    ModelKey key;
    uint64_t id;
  };
  std::vector<Issued> issued;  // recent kNew handles, live or stale
  uint32_t now = 1000;

  for (int op = 0; op < 100'000; ++op) {
    const uint32_t dice = rng() % 100;
    if (dice < 55) {
      const DedupKey& key = keys[rng() % keys.size()];
      const auto& token = tokens[rng() % 10 < 8 ? 0 : 1 + rng() % 2];
      const bool con = rng() % 4 != 0;
      const auto got = table.Admit(key, token, con, now);
      const auto want = model.Admit(key, token, con, now);
      ASSERT_EQ(got.verdict, want.verdict) << "op " << op;
      if (got.verdict == Verdict::kFull) {
        ASSERT_EQ(got.entry, nullptr);
      } else {
        ASSERT_NE(got.entry, nullptr);
        ASSERT_EQ(got.entry, table.Get(got.handle));
        const Model::Live* m = model.Find(ToModel(key), want.id);
        ASSERT_NE(m, nullptr);
        ASSERT_EQ(got.entry->state == State::kDone, m->done);
        ASSERT_EQ(got.entry->expires_at, m->expires_at);
        ASSERT_EQ(got.entry->response_code, m->code);
        ASSERT_EQ(got.entry->response_type, m->type);
        ASSERT_EQ(got.entry->response_message_id, m->mid);
        ASSERT_EQ(got.entry->max_age, m->max_age);
        if (got.verdict == Verdict::kNew) {
          issued.push_back({got.handle, ToModel(key), want.id});
          if (issued.size() > 64) issued.erase(issued.begin());
        }
      }
    } else if (dice < 78 && !issued.empty()) {
      const Issued& i = issued[rng() % issued.size()];
      const auto code = static_cast<uint8_t>(rng());
      const auto type = static_cast<uint8_t>(1 + rng() % 2);
      const auto mid = static_cast<uint16_t>(rng());
      const auto max_age = static_cast<uint16_t>(rng() % 3 == 0 ? rng() : 0);
      ASSERT_EQ(table.Complete(i.handle, code, type, mid, max_age),
                model.Complete(i.key, i.id, code, type, mid, max_age))
          << "op " << op;
    } else if (dice < 84 && !issued.empty()) {
      const Issued& i = issued[rng() % issued.size()];
      table.Forget(i.handle);
      model.Forget(i.key, i.id);
    } else if (dice < 88 && !issued.empty()) {
      const Issued& i = issued[rng() % issued.size()];
      ASSERT_EQ(table.Get(i.handle) != nullptr, model.Find(i.key, i.id) != nullptr) << "op " << op;
    } else if (dice < 95) {
      now += rng() % 4;
    } else {
      const size_t budget = rng() % 2 == 0 ? SIZE_MAX : rng() % 4;
      ASSERT_EQ(table.ExpireUntil(now, budget), model.ExpireUntil(now, budget)) << "op " << op;
    }
    ASSERT_EQ(table.size(), model.size()) << "op " << op;
    if (op % 16 == 0) {
      ASSERT_TRUE(table.CheckInvariants()) << "op " << op;
    }
  }
  const auto& s = table.stats();
  const auto& m = model.stats;
  EXPECT_EQ(s.hits_pending, m.hits_pending);
  EXPECT_EQ(s.hits_done, m.hits_done);
  EXPECT_EQ(s.token_mismatches, m.token_mismatches);
  EXPECT_EQ(s.evictions, m.evictions);
  EXPECT_EQ(s.full_refusals, m.full_refusals);
  EXPECT_EQ(s.expired, m.expired);
  std::cout << "[ stats    ] hits_pending=" << s.hits_pending << " hits_done=" << s.hits_done
            << " token_mismatches=" << s.token_mismatches << " evictions=" << s.evictions
            << " full_refusals=" << s.full_refusals << " expired=" << s.expired << "\n";
  EXPECT_TRUE(table.CheckInvariants());
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DedupTableRandom,
    testing::Values(RandomCase{1, 4},      // one slot: every insert is at the bound
                    RandomCase{16, 96},    // mostly full: evictions and refusals
                    RandomCase{64, 48},    // never full: expiry and token churn
                    RandomCase{100, 192}), // not a power of two
    [](const testing::TestParamInfo<RandomCase>& case_info) {
      return "Capacity" + std::to_string(case_info.param.capacity) + "Keys" +
             std::to_string(case_info.param.distinct_keys);
    });

}  // namespace
}  // namespace coapgate::engine
