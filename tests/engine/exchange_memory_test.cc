#include "engine/exchange_memory.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "net/ip_address.h"

namespace coapgate::engine {
namespace {

using Verdict = ExchangeMemory::Verdict;
using State = ExchangeMemory::State;
using Handle = ExchangeMemory::Handle;

constexpr uint8_t kChanged = 0x44;             // 2.04
constexpr uint8_t kServiceUnavailable = 0xa3;  // 5.03
constexpr uint8_t kAck = 2;
constexpr uint8_t kNon = 1;

// A plain device, keyed as the shard keys it: net::IpAddress::bytes() of the source address.
DeviceKey Device(const char* ip) {
  const auto address = net::IpAddress::Parse(ip);
  EXPECT_TRUE(address.has_value()) << ip;
  return DeviceKeyForAddress(address.value_or(net::IpAddress{}).bytes());
}

// Device number n of a synthetic fleet: 10.x.y.z.
DeviceKey FleetDevice(uint32_t n) {
  std::array<uint8_t, 16> bytes{};
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  bytes[12] = 10;
  bytes[13] = static_cast<uint8_t>(n >> 16);
  bytes[14] = static_cast<uint8_t>(n >> 8);
  bytes[15] = static_cast<uint8_t>(n);
  return DeviceKeyForAddress(bytes);
}

std::vector<std::byte> Token(std::initializer_list<int> bytes) {
  std::vector<std::byte> out;
  for (int b : bytes) out.push_back(static_cast<std::byte>(b));
  return out;
}

ExchangeMemory::Limits SmallLimits(uint32_t devices, uint32_t per_device = 4) {
  return {.devices = devices, .per_device = per_device, .con_lifetime_s = 247,
          .non_lifetime_s = 145, .hash_seed = 42};
}

bool SameHandle(Handle a, Handle b) { return a.slot == b.slot && a.generation == b.generation; }

// Admits and completes one exchange; its handle.
Handle AdmitDone(ExchangeMemory& memory, const DeviceKey& device, uint16_t mid, uint32_t now,
                 bool confirmable = true) {
  const auto a = memory.Admit(device, mid, Token({1, 2}), confirmable, now);
  EXPECT_EQ(a.verdict, Verdict::kNew) << "mid " << mid << " at " << now;
  EXPECT_TRUE(memory.Complete(a.handle, kChanged, confirmable ? kAck : kNon, mid, 0));
  return a.handle;
}

// ---- Ported from DedupTable ------------------------------------------------------------------

TEST(ExchangeMemory, NewThenPendingDuplicateThenDoneDuplicateReplaysTheResponse) {
  ExchangeMemory memory(SmallLimits(16));
  const DeviceKey device = Device("10.1.2.3");
  const auto token = Token({0xde, 0xad, 0xbe, 0xef});

  const auto first = memory.Admit(device, 0x1234, token, /*confirmable=*/true, 1000);
  ASSERT_EQ(first.verdict, Verdict::kNew);
  ASSERT_NE(first.entry, nullptr);
  EXPECT_EQ(first.entry->state(), State::kPending);
  EXPECT_EQ(memory.size(), 1u);
  EXPECT_EQ(memory.devices_in_use(), 1u);

  const auto pending = memory.Admit(device, 0x1234, token, true, 1001);
  EXPECT_EQ(pending.verdict, Verdict::kDuplicatePending);
  EXPECT_TRUE(SameHandle(pending.handle, first.handle));
  EXPECT_EQ(memory.stats().hits_pending, 1u);

  ASSERT_TRUE(memory.Complete(first.handle, kChanged, kAck, 0x1234, 0));
  // A second response must never replace the one duplicates may already have received.
  EXPECT_FALSE(memory.Complete(first.handle, kServiceUnavailable, kAck, 0x1234, 30));

  const auto done = memory.Admit(device, 0x1234, token, true, 1002);
  ASSERT_EQ(done.verdict, Verdict::kDuplicateDone);
  ASSERT_NE(done.entry, nullptr);
  EXPECT_EQ(done.entry->state(), State::kDone);
  EXPECT_EQ(done.entry->message_id(), 0x1234);
  EXPECT_EQ(done.entry->response_code(), kChanged);
  EXPECT_EQ(done.entry->response_type(), kAck);
  EXPECT_EQ(done.entry->response_message_id(), 0x1234);
  EXPECT_EQ(done.entry->max_age(), 0);
  EXPECT_EQ(done.entry->expires_at(), 1000u + 247u);
  ASSERT_EQ(done.entry->token_bytes().size(), token.size());
  EXPECT_TRUE(std::equal(token.begin(), token.end(), done.entry->token_bytes().begin()));
  EXPECT_EQ(memory.stats().hits_done, 1u);
  EXPECT_EQ(memory.size(), 1u);
  EXPECT_TRUE(memory.CheckInvariants());
}

TEST(ExchangeMemory, CachesA503WithMaxAgeAndANonResponse) {
  ExchangeMemory memory(SmallLimits(4));
  const DeviceKey device = Device("2001:db8::7");
  const auto token = Token({1});
  const auto a = memory.Admit(device, 9, token, /*confirmable=*/false, 10);
  ASSERT_TRUE(memory.Complete(a.handle, kServiceUnavailable, kNon, 0x7777, 42));
  const auto d = memory.Admit(device, 9, token, false, 11);
  ASSERT_EQ(d.verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(d.entry->response_code(), kServiceUnavailable);
  EXPECT_EQ(d.entry->response_type(), kNon);
  EXPECT_EQ(d.entry->response_message_id(), 0x7777);
  EXPECT_EQ(d.entry->max_age(), 42);
  EXPECT_FALSE(d.entry->confirmable());
}

TEST(ExchangeMemory, DifferentTokenIsANewExchangeAndCountsAMismatch) {
  ExchangeMemory memory(SmallLimits(16));
  const DeviceKey device = Device("10.1.2.3");
  const auto a = memory.Admit(device, 7, Token({1, 2}), true, 100);
  ASSERT_TRUE(memory.Complete(a.handle, kChanged, kAck, 7, 0));

  const auto b = memory.Admit(device, 7, Token({3, 4}), true, 101);  // the device rebooted
  EXPECT_EQ(b.verdict, Verdict::kNew);
  EXPECT_EQ(memory.stats().token_mismatches, 1u);
  EXPECT_EQ(memory.Get(a.handle), nullptr);
  ASSERT_NE(memory.Get(b.handle), nullptr);
  EXPECT_EQ(memory.Get(b.handle)->state(), State::kPending);
  EXPECT_EQ(memory.Get(b.handle)->expires_at(), 101u + 247u);
  EXPECT_EQ(memory.size(), 1u);

  // The new token is now the one that deduplicates; the old one is a mismatch again, and a
  // pending entry is replaced too (its handle goes stale).
  EXPECT_EQ(memory.Admit(device, 7, Token({3, 4}), true, 102).verdict,
            Verdict::kDuplicatePending);
  EXPECT_EQ(memory.Admit(device, 7, Token({1, 2}), true, 103).verdict, Verdict::kNew);
  EXPECT_EQ(memory.stats().token_mismatches, 2u);
  EXPECT_EQ(memory.Get(b.handle), nullptr);
  EXPECT_FALSE(memory.Complete(b.handle, kChanged, kAck, 7, 0));
  EXPECT_EQ(memory.size(), 1u);
  EXPECT_TRUE(memory.CheckInvariants());
}

TEST(ExchangeMemory, EmptyTokenMatchesOnlyAnEmptyToken) {
  ExchangeMemory memory(SmallLimits(16));
  const DeviceKey device = Device("10.0.0.1");
  ASSERT_EQ(memory.Admit(device, 1, {}, true, 0).verdict, Verdict::kNew);
  EXPECT_EQ(memory.Admit(device, 1, {}, true, 0).verdict, Verdict::kDuplicatePending);
  EXPECT_EQ(memory.Admit(device, 1, Token({0}), true, 0).verdict, Verdict::kNew);
  EXPECT_EQ(memory.stats().token_mismatches, 1u);
}

TEST(ExchangeMemory, MidAndDeviceBothDistinguishExchanges) {
  ExchangeMemory memory(SmallLimits(16));
  const auto token = Token({1});
  const DeviceKey devices[] = {
      Device("10.0.0.1"),
      Device("::a00:1"),          // IPv4-compatible, not v4-mapped: another address
      Device("2001:db8::a00:1"),  // IPv6 sharing the low 32 bits
      Device("10.0.0.2"),
  };
  for (const DeviceKey& d : devices) {
    EXPECT_EQ(memory.Admit(d, 100, token, true, 0).verdict, Verdict::kNew);
    EXPECT_EQ(memory.Admit(d, 101, token, true, 0).verdict, Verdict::kNew);
  }
  EXPECT_EQ(memory.devices_in_use(), std::size(devices));
  EXPECT_EQ(memory.size(), 2 * std::size(devices));
  // The v4-mapped spelling is the same device as the dotted quad.
  EXPECT_EQ(memory.Admit(Device("::ffff:10.0.0.1"), 100, token, true, 0).verdict,
            Verdict::kDuplicatePending);
  for (const DeviceKey& d : devices) {
    EXPECT_EQ(memory.Admit(d, 100, token, true, 0).verdict, Verdict::kDuplicatePending);
    EXPECT_EQ(memory.Admit(d, 101, token, true, 0).verdict, Verdict::kDuplicatePending);
  }
  EXPECT_TRUE(memory.CheckInvariants());
}

TEST(ExchangeMemory, ConEntryExpiresAfterConLifetime) {
  ExchangeMemory memory(SmallLimits(16));
  const DeviceKey device = Device("10.0.0.1");
  const auto token = Token({9});
  const auto a = memory.Admit(device, 1, token, true, 1000);
  ASSERT_TRUE(memory.Complete(a.handle, kChanged, kAck, 1, 0));
  EXPECT_EQ(memory.Admit(device, 1, token, true, 1000 + 246).verdict, Verdict::kDuplicateDone);
  const auto b = memory.Admit(device, 1, token, true, 1000 + 247);
  EXPECT_EQ(b.verdict, Verdict::kNew);
  EXPECT_EQ(memory.stats().expired, 1u);
  EXPECT_EQ(memory.stats().token_mismatches, 0u);
  EXPECT_EQ(memory.Get(a.handle), nullptr);
  EXPECT_EQ(memory.size(), 1u);
  EXPECT_TRUE(memory.CheckInvariants());
}

TEST(ExchangeMemory, NonEntryExpiresAfterTheShorterNonLifetime) {
  ExchangeMemory memory(SmallLimits(16));
  const DeviceKey device = Device("10.0.0.1");
  const auto token = Token({9});
  const auto a = memory.Admit(device, 2, token, /*confirmable=*/false, 1000);
  ASSERT_TRUE(memory.Complete(a.handle, kChanged, kNon, 0x55, 0));
  EXPECT_EQ(memory.Admit(device, 2, token, false, 1000 + 144).verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(memory.Admit(device, 2, token, false, 1000 + 145).verdict, Verdict::kNew);
  EXPECT_EQ(memory.stats().expired, 1u);
}

TEST(ExchangeMemory, ExpiryWorksAcrossTheClockWrap) {
  ExchangeMemory memory(SmallLimits(4));
  const DeviceKey device = Device("10.0.0.1");
  const auto token = Token({3});
  const uint32_t start = UINT32_MAX - 100;
  ASSERT_TRUE(memory.Complete(memory.Admit(device, 3, token, true, start).handle, kChanged,
                              kAck, 3, 0));
  EXPECT_EQ(memory.Sweep(start + 200), 0u);  // wrapped: now is 99
  EXPECT_EQ(memory.Admit(device, 3, token, true, start + 200).verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(memory.Admit(device, 3, token, true, start + 247).verdict, Verdict::kNew);
  EXPECT_EQ(memory.stats().expired, 1u);
}

TEST(ExchangeMemory, ExpiredPendingEntryIsReplacedAndItsHandleGoesStale) {
  ExchangeMemory memory(SmallLimits(4, 1));
  const DeviceKey device = Device("10.0.0.1");
  const auto token = Token({7});
  const auto a = memory.Admit(device, 1, token, false, 0);  // never completed
  EXPECT_EQ(memory.Admit(device, 2, token, false, 144).verdict, Verdict::kFull);
  EXPECT_EQ(memory.Admit(device, 2, token, false, 145).verdict, Verdict::kNew);
  EXPECT_EQ(memory.stats().expired, 1u);
  EXPECT_EQ(memory.stats().evicted_device_over_k, 0u);
  EXPECT_FALSE(memory.Complete(a.handle, kChanged, kNon, 1, 0));
  EXPECT_TRUE(memory.CheckInvariants());
}

TEST(ExchangeMemory, StaleHandlesFailSafelyAfterEvictionAndReuse) {
  ExchangeMemory memory(SmallLimits(1, 1));
  const DeviceKey device = Device("10.0.0.1");
  const auto token = Token({7});
  const Handle a = AdmitDone(memory, device, 1, 0);
  const auto b = memory.Admit(device, 2, token, true, 0);  // evicts a: K = 1
  ASSERT_EQ(b.verdict, Verdict::kNew);
  ASSERT_EQ(b.handle.slot, a.slot);  // same entry, new occupancy

  EXPECT_EQ(memory.Get(a), nullptr);
  EXPECT_FALSE(memory.Complete(a, kServiceUnavailable, kAck, 1, 60));
  memory.Forget(a);
  const auto* eb = memory.Get(b.handle);  // b is untouched by the stale calls
  ASSERT_NE(eb, nullptr);
  EXPECT_EQ(eb->state(), State::kPending);
  EXPECT_EQ(eb->message_id(), 2);

  // Another device takes the only record (table bound): b's handle goes stale too.
  ASSERT_TRUE(memory.Complete(b.handle, kChanged, kAck, 2, 0));
  const auto c = memory.Admit(Device("10.0.0.2"), 2, token, true, 1);
  ASSERT_EQ(c.verdict, Verdict::kNew);
  EXPECT_EQ(c.handle.slot, b.handle.slot);
  EXPECT_EQ(memory.Get(b.handle), nullptr);
  EXPECT_FALSE(memory.Complete(b.handle, kChanged, kAck, 2, 0));

  EXPECT_EQ(memory.Get(ExchangeMemory::kNoHandle), nullptr);
  EXPECT_EQ(memory.Get({5, 1}), nullptr);  // out of range
  EXPECT_FALSE(memory.Complete(ExchangeMemory::kNoHandle, kChanged, kAck, 0, 0));
  memory.Forget(ExchangeMemory::kNoHandle);
  EXPECT_EQ(memory.Get({0, 0}), nullptr);
  EXPECT_TRUE(memory.CheckInvariants());
}

// Callers keep a default Handle{} in request state before admission: it must never reach the
// first entry stored, and slot 0 (a record, not an entry) is never read as one.
TEST(ExchangeMemory, DefaultHandleNeverNamesAnEntry) {
  ExchangeMemory memory(SmallLimits(1));
  const auto a = memory.Admit(Device("10.0.0.1"), 1, Token({7}), true, 0);
  ASSERT_EQ(a.handle.slot, 1u);  // record 0 is slot 0, its first entry slot 1
  const Handle none{};
  EXPECT_EQ(memory.Get(none), nullptr);
  EXPECT_EQ(memory.Get({0, 0}), nullptr);
  EXPECT_EQ(memory.Get({0, 1}), nullptr);
  EXPECT_EQ(memory.Get({1, 0}), nullptr);
  EXPECT_FALSE(memory.Complete(none, kChanged, kAck, 1, 0));
  EXPECT_FALSE(memory.Complete({0, 0}, kChanged, kAck, 1, 0));
  memory.Forget({0, 0});
  ASSERT_NE(memory.Get(a.handle), nullptr);
  EXPECT_EQ(memory.Get(a.handle)->state(), State::kPending);
}

TEST(ExchangeMemory, ForgetMakesTheRetransmissionNew) {
  ExchangeMemory memory(SmallLimits(4));
  const DeviceKey device = Device("10.0.0.1");
  const auto token = Token({7});
  const auto a = memory.Admit(device, 1, token, true, 0);
  memory.Forget(a.handle);
  EXPECT_EQ(memory.size(), 0u);
  EXPECT_EQ(memory.Get(a.handle), nullptr);
  memory.Forget(a.handle);  // twice: no-op

  const auto b = memory.Admit(device, 1, token, true, 1);
  EXPECT_EQ(b.verdict, Verdict::kNew);
  ASSERT_TRUE(memory.Complete(b.handle, kChanged, kAck, 1, 0));
  memory.Forget(b.handle);  // done: the cached response must survive
  EXPECT_EQ(memory.Admit(device, 1, token, true, 2).verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(memory.stats().token_mismatches, 0u);
  EXPECT_TRUE(memory.CheckInvariants());
}

// ---- The per-device bound --------------------------------------------------------------------

TEST(ExchangeMemory, DeviceOverKEvictsItsOwnOldest) {
  ExchangeMemory memory(SmallLimits(16, 4));
  const DeviceKey noisy = Device("10.0.0.1");
  const DeviceKey quiet = Device("10.0.0.2");
  const Handle quiet_one = AdmitDone(memory, quiet, 1, 0);
  std::vector<Handle> handles;
  for (uint16_t mid = 1; mid <= 4; ++mid) handles.push_back(AdmitDone(memory, noisy, mid, mid));

  // The fifth exchange within the lifetime takes the place of the device's own oldest one.
  const auto fifth = memory.Admit(noisy, 5, Token({1, 2}), true, 5);
  ASSERT_EQ(fifth.verdict, Verdict::kNew);
  EXPECT_EQ(memory.stats().evicted_device_over_k, 1u);
  EXPECT_EQ(memory.Get(handles[0]), nullptr);
  EXPECT_EQ(fifth.handle.slot, handles[0].slot);
  for (size_t i = 1; i < 4; ++i) EXPECT_NE(memory.Get(handles[i]), nullptr);
  EXPECT_EQ(memory.Find(noisy, 1), nullptr);
  EXPECT_EQ(memory.Admit(noisy, 2, Token({1, 2}), true, 6).verdict, Verdict::kDuplicateDone);
  // Never another device's.
  EXPECT_NE(memory.Get(quiet_one), nullptr);
  EXPECT_EQ(memory.Admit(quiet, 1, Token({1, 2}), true, 7).verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(memory.stats().evicted_table_bound, 0u);
  EXPECT_EQ(memory.size(), 5u);
  EXPECT_TRUE(memory.CheckInvariants());
}

TEST(ExchangeMemory, DeviceOverKTakesAFreeThenAnExpiredEntryBeforeEvicting) {
  ExchangeMemory memory(SmallLimits(4, 3));
  const DeviceKey device = Device("10.0.0.1");
  AdmitDone(memory, device, 1, 0, /*confirmable=*/false);  // expires at 145
  AdmitDone(memory, device, 2, 10);
  const auto forgotten = memory.Admit(device, 3, Token({1}), true, 20);
  memory.Forget(forgotten.handle);  // a free entry
  AdmitDone(memory, device, 4, 200);  // takes the free one
  EXPECT_EQ(memory.stats().evicted_device_over_k, 0u);
  AdmitDone(memory, device, 5, 201);  // takes the expired NON one
  EXPECT_EQ(memory.stats().evicted_device_over_k, 0u);
  EXPECT_EQ(memory.stats().expired, 1u);
  AdmitDone(memory, device, 6, 202);  // now the oldest (MID 2, admitted at 10) goes
  EXPECT_EQ(memory.stats().evicted_device_over_k, 1u);
  EXPECT_EQ(memory.Find(device, 2), nullptr);
  for (uint16_t mid : {4, 5, 6}) EXPECT_NE(memory.Find(device, mid), nullptr) << mid;
  EXPECT_TRUE(memory.CheckInvariants());
}

TEST(ExchangeMemory, AllPendingRefusesWithFull) {
  ExchangeMemory memory(SmallLimits(4, 2));
  const DeviceKey device = Device("10.0.0.1");
  const auto token = Token({7});
  const auto a = memory.Admit(device, 1, token, true, 0);
  const auto b = memory.Admit(device, 2, token, true, 0);
  ASSERT_EQ(a.verdict, Verdict::kNew);
  ASSERT_EQ(b.verdict, Verdict::kNew);

  const auto refused = memory.Admit(device, 3, token, true, 1);
  EXPECT_EQ(refused.verdict, Verdict::kFull);
  EXPECT_EQ(refused.entry, nullptr);
  EXPECT_EQ(memory.Get(refused.handle), nullptr);
  EXPECT_EQ(memory.stats().full_refusals, 1u);
  // Nothing was stored or changed; other devices are not affected.
  EXPECT_EQ(memory.size(), 2u);
  EXPECT_EQ(memory.Find(device, 3), nullptr);
  EXPECT_EQ(memory.Admit(device, 1, token, true, 1).verdict, Verdict::kDuplicatePending);
  EXPECT_EQ(memory.Admit(device, 2, token, true, 1).verdict, Verdict::kDuplicatePending);
  EXPECT_EQ(memory.Admit(Device("10.0.0.2"), 3, token, true, 1).verdict, Verdict::kNew);

  // Once one is done it can make room.
  ASSERT_TRUE(memory.Complete(a.handle, kChanged, kAck, 1, 0));
  EXPECT_EQ(memory.Admit(device, 3, token, true, 2).verdict, Verdict::kNew);
  EXPECT_EQ(memory.stats().evicted_device_over_k, 1u);
  EXPECT_EQ(memory.Get(a.handle), nullptr);
  EXPECT_NE(memory.Get(b.handle), nullptr);
  EXPECT_TRUE(memory.CheckInvariants());
}

// The scenario: a global ring of the same size would have forgotten the quiet device's
// exchange within (devices x K) other admissions; per-device memory keeps it for its lifetime.
TEST(ExchangeMemory, FloodOfOtherDevicesCannotEvictWithinBound) {
  constexpr uint32_t kDevices = 1000;
  ExchangeMemory memory(SmallLimits(kDevices, 4));
  const DeviceKey quiet = FleetDevice(0);
  AdmitDone(memory, quiet, 77, 0);
  uint64_t admissions = 0;
  for (uint32_t now = 1; now <= 240; now += 3) {
    for (uint32_t n = 1; n < kDevices; ++n) {  // every other device, a new MID each time
      const auto a = memory.Admit(FleetDevice(n), static_cast<uint16_t>(now), Token({1, 2}),
                                  true, now);
      ASSERT_EQ(a.verdict, Verdict::kNew);
      ASSERT_TRUE(memory.Complete(a.handle, kChanged, kAck, a.entry->message_id(), 0));
      ++admissions;
    }
  }
  EXPECT_GT(admissions, 10u * kDevices * 4);  // ten times what the table holds at once
  EXPECT_EQ(memory.Admit(quiet, 77, Token({1, 2}), true, 246).verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(memory.stats().evicted_table_bound, 0u);
  EXPECT_GT(memory.stats().evicted_device_over_k, 0u);  // the flooders paid, each for itself
  EXPECT_TRUE(memory.CheckInvariants());
}

TEST(ExchangeMemory, NatRebindSamePortlessKeyIsCaught) {
  ExchangeMemory memory(SmallLimits(16));
  const auto token = Token({0x11, 0x22});
  // The first copy arrives from 198.51.100.7:40000; the NAT rebinds and the retransmission
  // comes from 198.51.100.7:51234. The key is the address alone, so it is the same device.
  const auto ip = net::IpAddress::Parse("198.51.100.7");
  ASSERT_TRUE(ip.has_value());
  const DeviceKey before = DeviceKeyForAddress(ip->bytes());
  const auto first = memory.Admit(before, 0x4242, token, true, 100);
  ASSERT_EQ(first.verdict, Verdict::kNew);
  ASSERT_TRUE(memory.Complete(first.handle, kChanged, kAck, 0x4242, 0));
  const DeviceKey after = DeviceKeyForAddress(net::IpAddress::Parse("::ffff:198.51.100.7")->bytes());
  const auto again = memory.Admit(after, 0x4242, token, true, 130);
  EXPECT_EQ(again.verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(memory.devices_in_use(), 1u);

  // A DTLS device is its identity: a new session from another address is the same device.
  const DeviceKey dtls = DeviceKeyForIdentity("89882280666012345678");
  ASSERT_TRUE(memory.Complete(memory.Admit(dtls, 9, token, true, 100).handle, kChanged, kAck,
                              9, 0));
  EXPECT_EQ(memory.Admit(DeviceKeyForIdentity("89882280666012345678"), 9, token, true, 200)
                .verdict,
            Verdict::kDuplicateDone);
}

TEST(ExchangeMemory, DtlsIdentityKeyStable) {
  // XXH3-128 of the empty input, xxHash's published sanity vector
  // (0x99AA06D3014798D8'6001C324468D497F), in canonical big-endian order.
  const DeviceKey empty = DeviceKeyForIdentity("");
  const std::array<uint8_t, 16> want_empty{0x99, 0xaa, 0x06, 0xd3, 0x01, 0x47, 0x98, 0xd8,
                                           0x60, 0x01, 0xc3, 0x24, 0x46, 0x8d, 0x49, 0x7f};
  EXPECT_EQ(empty.bytes, want_empty);
  EXPECT_EQ(empty.kind, DeviceKey::kDtls);
  // Pinned: a successor process must find the same key for the same ICCID.
  const std::array<uint8_t, 16> want_iccid{0xfa, 0xf3, 0xc5, 0xc7, 0xe3, 0xc3, 0xef, 0x00,
                                           0x9a, 0x9f, 0xc4, 0xde, 0xd5, 0x4c, 0x11, 0xc9};
  EXPECT_EQ(DeviceKeyForIdentity("89882280666012345678").bytes, want_iccid);
  EXPECT_NE(DeviceKeyForIdentity("89882280666012345679"),
            DeviceKeyForIdentity("89882280666012345678"));

  // Same 16 bytes, other kind: another device.
  ExchangeMemory memory(SmallLimits(4));
  DeviceKey plain = DeviceKeyForIdentity("89882280666012345678");
  plain.kind = DeviceKey::kPlain;
  const auto token = Token({1});
  EXPECT_EQ(memory.Admit(DeviceKeyForIdentity("89882280666012345678"), 1, token, true, 0).verdict,
            Verdict::kNew);
  EXPECT_EQ(memory.Admit(plain, 1, token, true, 0).verdict, Verdict::kNew);
  EXPECT_EQ(memory.devices_in_use(), 2u);
  EXPECT_NE(HashDeviceKey(plain, 1),
            HashDeviceKey(DeviceKeyForIdentity("89882280666012345678"), 1));
  EXPECT_NE(HashDeviceKey(plain, 1), HashDeviceKey(plain, 2));
}

// ---- The table bound -------------------------------------------------------------------------

TEST(ExchangeMemory, TableBoundEvictsLeastRecentlyActiveDevice) {
  ExchangeMemory memory(SmallLimits(4, 2));
  const DeviceKey a = Device("10.0.0.1");
  const DeviceKey b = Device("10.0.0.2");
  const DeviceKey c = Device("10.0.0.3");
  const DeviceKey d = Device("10.0.0.4");
  AdmitDone(memory, a, 1, 10);
  AdmitDone(memory, b, 1, 11);
  AdmitDone(memory, b, 2, 12);
  AdmitDone(memory, c, 1, 13);
  AdmitDone(memory, d, 1, 14);
  // a's retransmission makes it the most recently active device.
  EXPECT_EQ(memory.Admit(a, 1, Token({1, 2}), true, 15).verdict, Verdict::kDuplicateDone);

  AdmitDone(memory, Device("10.0.0.5"), 1, 20);  // the table is full: b goes, both entries
  EXPECT_EQ(memory.stats().evicted_table_bound, 2u);
  EXPECT_EQ(memory.Find(b, 1), nullptr);
  EXPECT_EQ(memory.Find(b, 2), nullptr);
  for (const DeviceKey* k : {&a, &c, &d}) EXPECT_NE(memory.Find(*k, 1), nullptr);
  // Visible: the youngest entry lost was 8 s old (b's MID 2, admitted at 12).
  EXPECT_EQ(memory.EffectiveHorizonS(20), 8u);
  EXPECT_EQ(memory.EffectiveHorizonS(20, ExchangeMemory::EvictionCause::kTableBound), 8u);
  EXPECT_EQ(memory.EffectiveHorizonS(20, ExchangeMemory::EvictionCause::kDeviceOverK), 247u);

  AdmitDone(memory, Device("10.0.0.6"), 1, 21);  // then c
  EXPECT_EQ(memory.Find(c, 1), nullptr);
  EXPECT_NE(memory.Find(a, 1), nullptr);
  EXPECT_EQ(memory.stats().evicted_table_bound, 3u);
  EXPECT_EQ(memory.devices_in_use(), 4u);
  EXPECT_TRUE(memory.CheckInvariants());
}

TEST(ExchangeMemory, TableBoundReclaimsAnExpiredDeviceBeforeEvictingALiveOne) {
  ExchangeMemory memory(SmallLimits(3, 2));
  const DeviceKey b = Device("10.0.0.2");  // least recently active, but alive
  const DeviceKey a = Device("10.0.0.1");  // more recent, but its NON entry has expired
  AdmitDone(memory, b, 1, 0);
  AdmitDone(memory, a, 1, 10, /*confirmable=*/false);  // expires at 155
  AdmitDone(memory, Device("10.0.0.3"), 1, 100);
  AdmitDone(memory, Device("10.0.0.4"), 1, 200);
  EXPECT_EQ(memory.stats().evicted_table_bound, 0u);
  EXPECT_EQ(memory.stats().records_reclaimed, 1u);
  EXPECT_EQ(memory.stats().expired, 1u);
  EXPECT_EQ(memory.Find(a, 1), nullptr);
  EXPECT_EQ(memory.Admit(b, 1, Token({1, 2}), true, 201).verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(memory.EffectiveHorizonS(201), 247u);  // nothing was lost early
  EXPECT_TRUE(memory.CheckInvariants());
}

TEST(ExchangeMemory, TableBoundNeverEvictsADeviceWithAPendingEntry) {
  ExchangeMemory memory(SmallLimits(2, 2));
  const auto token = Token({7});
  const DeviceKey a = Device("10.0.0.1");
  const DeviceKey b = Device("10.0.0.2");
  const auto pa = memory.Admit(a, 1, token, true, 0);
  AdmitDone(memory, a, 2, 0);
  const auto pb = memory.Admit(b, 1, token, true, 1);

  const auto refused = memory.Admit(Device("10.0.0.3"), 1, token, true, 2);
  EXPECT_EQ(refused.verdict, Verdict::kFull);
  EXPECT_EQ(memory.stats().full_refusals, 1u);
  EXPECT_EQ(memory.stats().evicted_table_bound, 0u);
  EXPECT_EQ(memory.devices_in_use(), 2u);
  EXPECT_EQ(memory.size(), 3u);

  ASSERT_TRUE(memory.Complete(pb.handle, kChanged, kAck, 1, 0));  // b can now go; a cannot
  EXPECT_EQ(memory.Admit(Device("10.0.0.3"), 1, token, true, 3).verdict, Verdict::kNew);
  EXPECT_EQ(memory.Find(b, 1), nullptr);
  EXPECT_NE(memory.Get(pa.handle), nullptr);
  EXPECT_EQ(memory.stats().evicted_table_bound, 1u);
  EXPECT_TRUE(memory.CheckInvariants());
}

// ---- Sweep and the horizon -------------------------------------------------------------------

TEST(ExchangeMemory, SweepExpiresEntriesAndFreesRecordsWithinItsBudget) {
  ExchangeMemory memory(SmallLimits(8, 2));
  for (uint32_t n = 0; n < 6; ++n) AdmitDone(memory, FleetDevice(n), 1, n);
  AdmitDone(memory, FleetDevice(0), 2, 100);  // device 0 stays alive after its first expires
  EXPECT_EQ(memory.Sweep(246), 0u);           // nothing has lived 247 s yet
  EXPECT_EQ(memory.Sweep(252, /*max_records=*/2), 1u);  // devices 0 (one entry) and 1
  EXPECT_EQ(memory.stats().expired, 2u);
  EXPECT_EQ(memory.devices_in_use(), 5u);
  EXPECT_EQ(memory.Sweep(252), 4u);  // devices 2..5 (the cursor wraps to 0 and 1: kept)
  EXPECT_EQ(memory.devices_in_use(), 1u);
  EXPECT_EQ(memory.size(), 1u);
  EXPECT_EQ(memory.stats().records_reclaimed, 5u);
  EXPECT_EQ(memory.stats().evicted_table_bound + memory.stats().evicted_device_over_k, 0u);
  EXPECT_TRUE(memory.CheckInvariants());
  // Freed records are reused for new devices (4 free + 2 never used = 7 more devices).
  for (uint32_t n = 10; n < 17; ++n) AdmitDone(memory, FleetDevice(n), 1, 300);
  EXPECT_EQ(memory.devices_in_use(), 8u);
  EXPECT_EQ(memory.stats().evicted_table_bound, 0u);
  EXPECT_EQ(memory.Admit(FleetDevice(0), 2, Token({1, 2}), true, 301).verdict,
            Verdict::kDuplicateDone);
  EXPECT_TRUE(memory.CheckInvariants());
}

TEST(ExchangeMemory, HorizonGaugeReportsYoungestEarlyEviction) {
  ExchangeMemory memory(SmallLimits(8, 1));
  const DeviceKey a = Device("10.0.0.1");
  const DeviceKey b = Device("10.0.0.2");
  EXPECT_EQ(memory.EffectiveHorizonS(1000), 247u);  // nothing evicted early yet

  AdmitDone(memory, a, 1, 1000);
  AdmitDone(memory, b, 1, 1000);
  AdmitDone(memory, a, 2, 1010);  // K = 1: a's MID 1 goes at 10 s of age (window 16)
  EXPECT_EQ(memory.EffectiveHorizonS(1010), 10u);
  AdmitDone(memory, b, 2, 1030);  // b's MID 1 at 30 s (window 17): the youngest is still 10
  EXPECT_EQ(memory.stats().evicted_device_over_k, 2u);
  EXPECT_EQ(memory.EffectiveHorizonS(1030), 10u);
  EXPECT_EQ(memory.EffectiveHorizonS(1079), 10u);
  EXPECT_EQ(memory.EffectiveHorizonS(1080), 30u);   // window 18: only window 17 counts
  EXPECT_EQ(memory.EffectiveHorizonS(1140), 247u);  // window 19: nothing recent
  EXPECT_EQ(memory.EffectiveHorizonS(1030, ExchangeMemory::EvictionCause::kDeviceOverK), 10u);
  EXPECT_EQ(memory.EffectiveHorizonS(1030, ExchangeMemory::EvictionCause::kTableBound), 247u);
  // Entries that reached their lifetime are expiries, not early evictions.
  AdmitDone(memory, a, 3, 1010 + 247);
  EXPECT_EQ(memory.stats().evicted_device_over_k, 2u);
  EXPECT_EQ(memory.EffectiveHorizonS(1010 + 247), 247u);
}

TEST(ExchangeMemory, MemoryPerDeviceWithinBudget) {
  static_assert(sizeof(ExchangeMemory::Entry) == 22);
  for (uint32_t devices : {1u, 2u, 3u, 5u, 8u, 9u, 100u, 1000u, 1025u, 65537u}) {
    ExchangeMemory memory(SmallLimits(devices, 4));
    EXPECT_LE(memory.MemoryBytes(), 128u * devices) << devices;
    EXPECT_GE(memory.index_slots(), 2u * devices);
  }
  ExchangeMemory million(SmallLimits(1'000'000, 4));
  EXPECT_LE(million.MemoryBytes(), size_t{128'000'000});
  const double per_device = static_cast<double>(million.MemoryBytes()) / 1e6;
  std::cout << "[ memory   ] 1,000,000 devices, K=4: " << million.MemoryBytes() << " bytes, "
            << per_device << " bytes/device\n";
  EXPECT_LE(per_device, 128.0);
  // And it is usable at that size.
  AdmitDone(million, FleetDevice(999'999), 1, 0);
  EXPECT_EQ(million.Admit(FleetDevice(999'999), 1, Token({1, 2}), true, 1).verdict,
            Verdict::kDuplicateDone);
}

// ---- Randomized comparison with a reference model --------------------------------------------

uint32_t TestSeed() {
  if (const char* s = std::getenv("COAPGATE_TEST_SEED")) {
    return static_cast<uint32_t>(std::strtoul(s, nullptr, 0));
  }
  return std::random_device{}();
}

// The per-device policy stated with std containers, for a fleet within the device bound (so
// the table bound never acts). Each device has K slots; the model learns which slot the table
// chose for a new entry from its handle and checks that the choice was allowed. Expired entries
// are "maybe present" (Sweep removes them on its own schedule), so the model tolerates either
// outcome where only they are involved and follows the table.
class Model {
 public:
  struct Live {
    uint64_t id;
    uint16_t mid;
    std::vector<std::byte> token;
    bool done = false;
    uint32_t expires_at;
    uint32_t admitted_at;
    uint8_t code = 0, type = 0;
    uint16_t response_mid = 0, max_age = 0;
  };
  using Slots = std::vector<std::optional<Live>>;
  using Key = std::pair<std::array<uint8_t, 16>, uint8_t>;

  Model(const ExchangeMemory::Limits& limits) : limits_(limits) {}

  // Checks the table's answer to Admit against the policy and applies it; "" if allowed.
  std::string Admit(const DeviceKey& key, uint16_t mid, const std::vector<std::byte>& token,
                    bool con, uint32_t now, const ExchangeMemory::Admission& got,
                    uint64_t* new_id) {
    Slots& slots = Device(key);
    const uint32_t k = limits_.per_device;
    const auto expired = [&](const Live& e) { return now >= e.expires_at; };
    int match = -1;
    for (uint32_t i = 0; i < k; ++i) {
      if (slots[i] && slots[i]->mid == mid) match = static_cast<int>(i);
    }
    const uint32_t got_index = got.handle.slot % (k + 1) - 1;  // the entry within its record
    if (match >= 0 && !expired(*slots[match]) && slots[match]->token == token) {
      const Live& e = *slots[match];
      const Verdict want = e.done ? Verdict::kDuplicateDone : Verdict::kDuplicatePending;
      ++(e.done ? stats.hits_done : stats.hits_pending);
      if (got.verdict != want) return "duplicate verdict";
      if (got_index != static_cast<uint32_t>(match)) return "duplicate slot";
      return Same(e, *got.entry);
    }
    int slot = -1;
    if (match >= 0 && !expired(*slots[match])) {
      ++stats.token_mismatches;
      slot = match;
      if (got.verdict != Verdict::kNew || got_index != static_cast<uint32_t>(match)) {
        return "token mismatch not replaced in place";
      }
    } else {
      bool any_reusable = false;
      for (uint32_t i = 0; i < k; ++i) any_reusable |= !slots[i] || expired(*slots[i]);
      if (any_reusable) {
        if (got.verdict != Verdict::kNew) return "refused with a reusable slot";
        if (slots[got_index] && !expired(*slots[got_index])) return "took a live slot";
        // An expired match in another slot was removed by Sweep.
        if (match >= 0 && got_index != static_cast<uint32_t>(match)) slots[match].reset();
        slot = static_cast<int>(got_index);
      } else {
        int oldest = -1;
        for (uint32_t i = 0; i < k; ++i) {
          if (slots[i]->done &&
              (oldest < 0 || slots[i]->admitted_at < slots[oldest]->admitted_at)) {
            oldest = static_cast<int>(i);
          }
        }
        if (oldest < 0) {
          ++stats.full_refusals;
          return got.verdict == Verdict::kFull ? "" : "all pending but not refused";
        }
        ++stats.evicted_device_over_k;
        if (got.verdict != Verdict::kNew || got_index != static_cast<uint32_t>(oldest)) {
          return "over K did not evict the oldest done entry";
        }
        slot = oldest;
      }
    }
    *new_id = next_id_++;
    slots[slot] = Live{.id = *new_id, .mid = mid, .token = token,
                       .expires_at = now + (con ? limits_.con_lifetime_s : limits_.non_lifetime_s),
                       .admitted_at = now};
    return Same(*slots[slot], *got.entry);
  }

  Live* Find(const DeviceKey& key, uint64_t id) {
    for (auto& s : Device(key)) {
      if (s && s->id == id) return &*s;
    }
    return nullptr;
  }
  void Remove(const DeviceKey& key, uint64_t id) {
    for (auto& s : Device(key)) {
      if (s && s->id == id) s.reset();
    }
  }
  size_t AliveAt(uint32_t now) const {
    size_t n = 0;
    for (const auto& [key, slots] : devices_) {
      for (const auto& s : slots) n += s && now < s->expires_at;
    }
    return n;
  }

  ExchangeMemory::Stats stats{};

 private:
  static std::string Same(const Live& m, const ExchangeMemory::Entry& e) {
    if ((e.state() == State::kDone) != m.done) return "state";
    if (e.message_id() != m.mid || e.expires_at() != m.expires_at) return "mid or expiry";
    if (!std::equal(m.token.begin(), m.token.end(), e.token_bytes().begin(),
                    e.token_bytes().end())) {
      return "token";
    }
    if (e.response_code() != m.code || e.response_type() != m.type ||
        e.response_message_id() != m.response_mid || e.max_age() != m.max_age) {
      return "cached response";
    }
    return "";
  }
  Slots& Device(const DeviceKey& key) {
    auto [it, inserted] = devices_.try_emplace(Key{key.bytes, key.kind});
    if (inserted) it->second.resize(limits_.per_device);
    return it->second;
  }

  ExchangeMemory::Limits limits_;
  std::map<Key, Slots> devices_;
  uint64_t next_id_ = 1;
};

struct RandomCase {
  uint32_t devices;   // the table's bound
  uint32_t fleet;     // distinct devices sent from (<= devices here)
  uint32_t per_device;
};

class ExchangeMemoryRandom : public testing::TestWithParam<RandomCase> {};

TEST_P(ExchangeMemoryRandom, MatchesTheReferenceModel) {
  const RandomCase param = GetParam();
  const uint32_t seed = TestSeed();
  std::cout << "[ seed     ] COAPGATE_TEST_SEED=" << seed << "\n";
  SCOPED_TRACE("COAPGATE_TEST_SEED=" + std::to_string(seed));
  std::mt19937 rng(seed);

  // Short lifetimes so that expiry, over-K eviction and refusal all happen in 100k operations.
  const ExchangeMemory::Limits limits{.devices = param.devices, .per_device = param.per_device,
                                      .con_lifetime_s = 30, .non_lifetime_s = 12,
                                      .hash_seed = rng()};
  ExchangeMemory memory(limits);
  Model model(limits);

  std::vector<DeviceKey> fleet;
  for (uint32_t i = 0; i < param.fleet; ++i) {
    DeviceKey k = rng() % 3 == 0 ? DeviceKeyForIdentity("8988228066601234" + std::to_string(i))
                                 : FleetDevice(i);
    fleet.push_back(k);
  }
  const std::vector<std::vector<std::byte>> tokens = {Token({1, 2, 3, 4}), Token({9}), {}};
  const uint32_t mids = param.per_device + 3;  // a few more MIDs than slots: over-K happens

  struct Issued {
    Handle handle;
    DeviceKey key;
    uint64_t id;
  };
  std::vector<Issued> issued;  // recent kNew handles, live or stale
  uint32_t now = 1000;

  for (int op = 0; op < 100'000; ++op) {
    const uint32_t dice = rng() % 100;
    if (dice < 55) {
      const DeviceKey& key = fleet[rng() % fleet.size()];
      const auto mid = static_cast<uint16_t>(rng() % mids);
      const auto& token = tokens[rng() % 10 < 8 ? 0 : 1 + rng() % 2];
      const bool con = rng() % 4 != 0;
      const auto got = memory.Admit(key, mid, token, con, now);
      uint64_t id = 0;
      const std::string error = model.Admit(key, mid, token, con, now, got, &id);
      ASSERT_EQ(error, "") << "op " << op;
      if (got.verdict == Verdict::kFull) {
        ASSERT_EQ(got.entry, nullptr);
      } else {
        ASSERT_EQ(got.entry, memory.Get(got.handle));
      }
      if (got.verdict == Verdict::kNew) {
        issued.push_back({got.handle, key, id});
        if (issued.size() > 64) issued.erase(issued.begin());
      }
    } else if (dice < 78 && !issued.empty()) {
      const Issued& i = issued[rng() % issued.size()];
      const auto code = static_cast<uint8_t>(rng());
      const auto type = static_cast<uint8_t>(1 + rng() % 2);
      const auto mid = static_cast<uint16_t>(rng());
      const auto max_age = static_cast<uint16_t>(rng() % 3 == 0 ? rng() : 0);
      Model::Live* m = model.Find(i.key, i.id);
      const bool got = memory.Complete(i.handle, code, type, mid, max_age);
      if (m != nullptr && now >= m->expires_at && memory.Get(i.handle) == nullptr) {
        model.Remove(i.key, i.id);  // swept
        m = nullptr;
      }
      ASSERT_EQ(got, m != nullptr && !m->done) << "op " << op;
      if (got) {
        m->done = true;
        m->code = code;
        m->type = type;
        m->response_mid = mid;
        m->max_age = max_age;
      }
    } else if (dice < 84 && !issued.empty()) {
      const Issued& i = issued[rng() % issued.size()];
      memory.Forget(i.handle);
      if (const Model::Live* m = model.Find(i.key, i.id); m != nullptr && !m->done) {
        model.Remove(i.key, i.id);
      }
      if (memory.Get(i.handle) == nullptr) model.Remove(i.key, i.id);  // swept
      ASSERT_EQ(memory.Get(i.handle) != nullptr, model.Find(i.key, i.id) != nullptr);
    } else if (dice < 88 && !issued.empty()) {
      const Issued& i = issued[rng() % issued.size()];
      const Model::Live* m = model.Find(i.key, i.id);
      const bool present = memory.Get(i.handle) != nullptr;
      if (m != nullptr && now >= m->expires_at) {
        if (!present) model.Remove(i.key, i.id);  // swept
      } else {
        ASSERT_EQ(present, m != nullptr) << "op " << op;
      }
    } else if (dice < 95) {
      now += rng() % 4;
    } else {
      memory.Sweep(now, rng() % 2 == 0 ? SIZE_MAX : rng() % 4);
    }
    // Every alive model entry is in the table; the table holds at most the expired rest.
    ASSERT_GE(memory.size(), model.AliveAt(now)) << "op " << op;
    if (op % 16 == 0) {
      ASSERT_TRUE(memory.CheckInvariants()) << "op " << op;
    }
  }
  const auto& s = memory.stats();
  const auto& m = model.stats;
  EXPECT_EQ(s.hits_pending, m.hits_pending);
  EXPECT_EQ(s.hits_done, m.hits_done);
  EXPECT_EQ(s.token_mismatches, m.token_mismatches);
  EXPECT_EQ(s.evicted_device_over_k, m.evicted_device_over_k);
  EXPECT_EQ(s.full_refusals, m.full_refusals);
  EXPECT_EQ(s.evicted_table_bound, 0u);
  std::cout << "[ stats    ] hits_pending=" << s.hits_pending << " hits_done=" << s.hits_done
            << " token_mismatches=" << s.token_mismatches
            << " evicted_device_over_k=" << s.evicted_device_over_k
            << " full_refusals=" << s.full_refusals << " expired=" << s.expired
            << " records_reclaimed=" << s.records_reclaimed << "\n";
  EXPECT_GT(s.evicted_device_over_k, 0u);
  EXPECT_GT(s.expired, 0u);
  EXPECT_TRUE(memory.CheckInvariants());
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ExchangeMemoryRandom,
    testing::Values(RandomCase{1, 1, 1},     // one device, one entry: every insert at the bound
                    RandomCase{8, 8, 2},     // every record used
                    RandomCase{64, 24, 4},   // the default K, room to spare
                    RandomCase{100, 6, 16}),  // the largest K, few enough devices to exceed it
    [](const testing::TestParamInfo<RandomCase>& case_info) {
      return "Devices" + std::to_string(case_info.param.devices) + "Fleet" +
             std::to_string(case_info.param.fleet) + "K" +
             std::to_string(case_info.param.per_device);
    });

// Beyond the bound the victim choice is a sampled LRU, so this spin checks the rules instead of
// exact verdicts: invariants, alive pending entries never lost, every early loss counted, and
// verdicts consistent with what the table remembered just before.
TEST(ExchangeMemoryRandomBound, KeepsTheRulesWhenTheFleetExceedsTheTable) {
  const uint32_t seed = TestSeed();
  std::cout << "[ seed     ] COAPGATE_TEST_SEED=" << seed << "\n";
  SCOPED_TRACE("COAPGATE_TEST_SEED=" + std::to_string(seed));
  std::mt19937 rng(seed);
  const ExchangeMemory::Limits limits{.devices = 24, .per_device = 2, .con_lifetime_s = 40,
                                      .non_lifetime_s = 15, .hash_seed = rng()};
  ExchangeMemory memory(limits);
  std::vector<DeviceKey> fleet;
  for (uint32_t i = 0; i < 64; ++i) fleet.push_back(FleetDevice(i));
  const auto token = Token({4, 2});

  struct Tracked {
    Handle handle;
    uint32_t expires_at;
    bool done;
  };
  std::vector<Tracked> tracked;  // every entry admitted and not yet gone
  uint32_t now = 1;
  for (int op = 0; op < 50'000; ++op) {
    const uint32_t dice = rng() % 100;
    const ExchangeMemory::Stats before = memory.stats();
    Handle forgotten = ExchangeMemory::kNoHandle;
    if (dice < 60) {
      const DeviceKey& key = fleet[rng() % fleet.size()];
      const auto mid = static_cast<uint16_t>(rng() % 4);  // one token per (device, MID): no reboots
      const bool con = rng() % 3 != 0;
      const ExchangeMemory::Entry* seen = memory.Find(key, mid);
      const bool alive = seen != nullptr && now < seen->expires_at();
      const bool was_done = alive && seen->state() == State::kDone;
      const auto got = memory.Admit(key, mid, token, con, now);
      if (alive) {
        ASSERT_EQ(got.verdict, was_done ? Verdict::kDuplicateDone : Verdict::kDuplicatePending)
            << "op " << op;
      } else {
        ASSERT_TRUE(got.verdict == Verdict::kNew || got.verdict == Verdict::kFull) << "op " << op;
      }
      if (got.verdict == Verdict::kNew) {
        tracked.push_back({got.handle, got.entry->expires_at(), false});
      }
    } else if (dice < 85 && !tracked.empty()) {
      Tracked& t = tracked[rng() % tracked.size()];
      if (memory.Complete(t.handle, kChanged, kAck, 1, 0)) t.done = true;
    } else if (dice < 88 && !tracked.empty()) {
      forgotten = tracked[rng() % tracked.size()].handle;
      memory.Forget(forgotten);
    } else if (dice < 97) {
      now += rng() % 3;
    } else {
      memory.Sweep(now, rng() % 8);
    }
    // Every loss before the lifetime was of a done entry and is counted as an eviction.
    uint64_t lost_early = 0;
    for (auto it = tracked.begin(); it != tracked.end();) {
      if (memory.Get(it->handle) != nullptr) {
        it->done = memory.Get(it->handle)->state() == State::kDone;
        ++it;
        continue;
      }
      if (SameHandle(it->handle, forgotten) && !it->done) {
        it = tracked.erase(it);  // forgotten by this step
        continue;
      }
      if (now < it->expires_at) {
        ASSERT_TRUE(it->done) << "op " << op << ": an alive pending entry was lost";
        ++lost_early;
      }
      it = tracked.erase(it);
    }
    const ExchangeMemory::Stats& after = memory.stats();
    ASSERT_EQ(lost_early, (after.evicted_device_over_k - before.evicted_device_over_k) +
                              (after.evicted_table_bound - before.evicted_table_bound))
        << "op " << op;
    ASSERT_LE(memory.EffectiveHorizonS(now), limits.con_lifetime_s);
    if (op % 8 == 0) {
      ASSERT_TRUE(memory.CheckInvariants()) << "op " << op;
    }
  }
  const auto& s = memory.stats();
  std::cout << "[ stats    ] evicted_table_bound=" << s.evicted_table_bound
            << " evicted_device_over_k=" << s.evicted_device_over_k
            << " full_refusals=" << s.full_refusals << " records_reclaimed=" << s.records_reclaimed
            << " expired=" << s.expired << "\n";
  EXPECT_GT(s.evicted_table_bound, 0u);
  EXPECT_GT(s.records_reclaimed, 0u);
  EXPECT_TRUE(memory.CheckInvariants());
}

// Planned restarts: done entries leave with their remaining lifetime and come back into a
// fresh table whose clock has nothing to do with the first one's.
TEST(ExchangeMemoryRestart, DoneEntriesSurviveWithTheirRemainingLifetime) {
  ExchangeMemory old_memory({.devices = 8, .con_lifetime_s = 247, .non_lifetime_s = 145});
  const auto token = Token({1, 2, 3});
  auto done = old_memory.Admit(Device("10.0.0.1"), 100, token, true, 1000);
  ASSERT_EQ(done.verdict, Verdict::kNew);
  ASSERT_TRUE(old_memory.Complete(done.handle, kChanged, kAck, 100, 0));
  auto pending = old_memory.Admit(Device("10.0.0.1"), 101, token, true, 1000);
  ASSERT_EQ(pending.verdict, Verdict::kNew);  // never answered: not saved
  auto expired = old_memory.Admit(Device("10.0.0.2"), 5, token, false, 800);
  ASSERT_TRUE(old_memory.Complete(expired.handle, kChanged, kNon, 9, 0));  // gone at 945

  std::vector<ExchangeMemory::SavedExchange> saved;
  old_memory.ForEachDone(1047, [&](const ExchangeMemory::SavedExchange& e) { saved.push_back(e); });
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_EQ(saved[0].message_id, 100);
  EXPECT_EQ(saved[0].remaining_s, 200u);  // 247 - 47

  ExchangeMemory fresh({.devices = 8, .con_lifetime_s = 247, .non_lifetime_s = 145});
  ASSERT_TRUE(fresh.Restore(saved[0], 7));
  EXPECT_FALSE(fresh.Restore(saved[0], 7)) << "already known";
  auto again = fresh.Admit(Device("10.0.0.1"), 100, token, true, 8);
  ASSERT_EQ(again.verdict, Verdict::kDuplicateDone);
  EXPECT_EQ(again.entry->response_code(), kChanged);
  EXPECT_EQ(again.entry->response_type(), kAck);
  EXPECT_EQ(again.entry->response_message_id(), 100);
  EXPECT_EQ(again.entry->expires_at(), 207u);
  // Another token under the same MID is another exchange, as before the restart.
  EXPECT_EQ(fresh.Admit(Device("10.0.0.1"), 100, Token({9}), true, 9).verdict, Verdict::kNew);
  // And the lifetime ends when it would have: at 207 in this clock.
  ExchangeMemory later({.devices = 8});
  ASSERT_TRUE(later.Restore(saved[0], 7));
  EXPECT_EQ(later.Admit(Device("10.0.0.1"), 100, token, true, 207).verdict, Verdict::kNew);
  EXPECT_TRUE(fresh.CheckInvariants());
  EXPECT_TRUE(later.CheckInvariants());
}

TEST(ExchangeMemoryRestart, RestoreRefusesInvalidEntries) {
  ExchangeMemory memory({.devices = 2});
  ExchangeMemory::SavedExchange e{};
  e.device = Device("10.0.0.1");
  e.remaining_s = 0;
  EXPECT_FALSE(memory.Restore(e, 1));
  e.remaining_s = 10;
  e.device.kind = 3;
  EXPECT_FALSE(memory.Restore(e, 1));
  e.device.kind = DeviceKey::kPlain;
  e.token_length = 9;
  EXPECT_FALSE(memory.Restore(e, 1));
  e.token_length = 0;
  e.remaining_s = 100000;  // capped at the lifetime
  ASSERT_TRUE(memory.Restore(e, 1));
  EXPECT_EQ(memory.Find(e.device, 0)->expires_at(), 1u + ExchangeMemory::kDefaultNonLifetimeS);
  EXPECT_TRUE(memory.CheckInvariants());
}

}  // namespace
}  // namespace coapgate::engine
