#include "registry/device_activity.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>

#include "registry/device_registry.h"

namespace coapgate::registry {
namespace {

TEST(DeviceActivity, RequestWordRoundTripsEveryFieldAtItsLimits) {
  const RequestActivity zero{};
  EXPECT_EQ(Pack(zero), 0u);
  EXPECT_EQ(UnpackRequest(0), zero);
  const RequestActivity full{0xffffffffu, 0xff, Reason::kTableFull, true};
  EXPECT_EQ(UnpackRequest(Pack(full)), full);
  const RequestActivity typical{1796121801u, 0x81 /* 4.01 */, Reason::kInactive, false};
  EXPECT_EQ(UnpackRequest(Pack(typical)), typical);
  // Fields do not bleed into each other.
  EXPECT_EQ(UnpackRequest(Pack({0, 0, Reason::kNone, true})).reason, Reason::kNone);
  EXPECT_EQ(UnpackRequest(Pack({0xffffffffu, 0, Reason::kNone, false})).code, 0);
  EXPECT_LT(Pack(full), uint64_t{1} << 46);  // 18 bits left for later
}

TEST(DeviceActivity, HandshakeWordRoundTrips) {
  EXPECT_EQ(UnpackHandshake(0), HandshakeActivity{});
  const HandshakeActivity failed{1796121801u, Reason::kWrongKey};
  EXPECT_EQ(UnpackHandshake(Pack(failed)), failed);
  const HandshakeActivity last{0xffffffffu, Reason::kTableFull};
  EXPECT_EQ(UnpackHandshake(Pack(last)), last);
}

TEST(DeviceActivity, EveryReasonHasItsOwnOneTokenName) {
  std::set<std::string> names;
  for (unsigned r = 1; r < static_cast<unsigned>(Reason::kCount); ++r) {
    const std::string name(ReasonName(static_cast<Reason>(r)));
    EXPECT_FALSE(name.empty()) << r;
    EXPECT_EQ(name.find_first_not_of("abcdefghijklmnopqrstuvwxyz_"), std::string::npos) << name;
    EXPECT_TRUE(names.insert(name).second) << "twice: " << name;
  }
  EXPECT_EQ(ReasonName(Reason::kNone), "");
}

constexpr std::string_view kCsv =
    "iccid,imsi,ip,status,psk,psk_format\n"
    "898828066600000001,,10.0.0.1,active,,\n"
    "898828066600000002,,10.0.0.2,active,,\n";

TEST(DeviceActivity, RegistryWordsStartAtZeroAndHoldWhatWasStored) {
  auto registry = DeviceRegistry::ParseCsv(kCsv, "d.csv");
  ASSERT_TRUE(registry) << registry.error().message;
  const DeviceRegistry& r = **registry;
  const auto device = r.FindByIccid("898828066600000002");
  ASSERT_TRUE(device);
  EXPECT_EQ(device->index, 1u);
  EXPECT_EQ(r.FindByIp(*net::IpAddress::Parse("10.0.0.2"))->index, 1u);
  EXPECT_EQ(r.LoadRequestActivity(device->index), RequestActivity{});
  EXPECT_EQ(r.LoadHandshakeActivity(device->index), HandshakeActivity{});
  r.StoreRequestActivity(device->index, {100, 0x44, Reason::kNone, true});
  r.StoreHandshakeActivity(device->index, {90, Reason::kWrongKey});
  EXPECT_EQ(r.LoadRequestActivity(1), (RequestActivity{100, 0x44, Reason::kNone, true}));
  EXPECT_EQ(r.LoadHandshakeActivity(1), (HandshakeActivity{90, Reason::kWrongKey}));
  EXPECT_EQ(r.LoadRequestActivity(0), RequestActivity{});  // the other device untouched
}

TEST(DeviceActivity, AReloadKeepsTheActivityOfTheDevicesItKeeps) {
  auto before = DeviceRegistry::ParseCsv(kCsv, "d.csv");
  ASSERT_TRUE(before);
  (*before)->StoreRequestActivity(0, {100, 0x81, Reason::kInactive, false});
  (*before)->StoreHandshakeActivity(1, {90, Reason::kHandshakeTimeout});
  // Reordered, one device gone, one new.
  auto after = DeviceRegistry::ParseCsv(
      "iccid,imsi,ip,status,psk,psk_format\n"
      "898828066600000003,,10.0.0.3,active,,\n"
      "898828066600000001,,10.0.0.1,inactive,,\n",
      "d.csv");
  ASSERT_TRUE(after);
  (*after)->InheritActivity(**before);
  EXPECT_EQ((*after)->LoadRequestActivity((*after)->FindByIccid("898828066600000001")->index),
            (RequestActivity{100, 0x81, Reason::kInactive, false}));
  EXPECT_EQ((*after)->LoadRequestActivity((*after)->FindByIccid("898828066600000003")->index),
            RequestActivity{});
  EXPECT_EQ((*after)->LoadHandshakeActivity(0), HandshakeActivity{});
}

// The first-registration byte (engine/first_registration.h): one claimant at a time, given
// back on failure, and a reload keeps kRegistered only (a claim in flight settles on the
// snapshot current when it is answered).
TEST(DeviceRegistration, OneClaimantAndAReloadKeepsOnlyRegistered) {
  using Registration = DeviceRegistry::Registration;
  auto before = DeviceRegistry::ParseCsv(kCsv, "d.csv");
  ASSERT_TRUE(before);
  const DeviceRegistry& r = **before;
  const uint32_t one = r.FindByIccid("898828066600000001")->index;
  const uint32_t two = r.FindByIccid("898828066600000002")->index;
  EXPECT_EQ(r.LoadRegistration(one), Registration::kUnknown);
  EXPECT_TRUE(r.BeginRegistration(one));
  EXPECT_FALSE(r.BeginRegistration(one)) << "a second shard must not queue it again";
  EXPECT_EQ(r.LoadRegistration(one), Registration::kClaiming);
  r.AbandonRegistration(one);
  EXPECT_TRUE(r.BeginRegistration(one)) << "given back: the next interaction asks again";
  r.MarkRegistered(one);
  EXPECT_FALSE(r.BeginRegistration(one));
  EXPECT_EQ(r.LoadRegistration(one), Registration::kRegistered);
  EXPECT_TRUE(r.BeginRegistration(two));

  auto after = DeviceRegistry::ParseCsv(kCsv, "d.csv");
  ASSERT_TRUE(after);
  (*after)->InheritActivity(r);
  EXPECT_EQ((*after)->LoadRegistration((*after)->FindByIccid("898828066600000001")->index),
            Registration::kRegistered);
  EXPECT_EQ((*after)->LoadRegistration((*after)->FindByIccid("898828066600000002")->index),
            Registration::kUnknown);
}

// Writers on two threads and a reader: each load is one whole store (TSan sees atomics only).
TEST(DeviceActivity, ConcurrentStoresAndLoadsSeeWholeWords) {
  auto registry = DeviceRegistry::ParseCsv(kCsv, "d.csv");
  ASSERT_TRUE(registry);
  const DeviceRegistry& r = **registry;
  const RequestActivity a{1, 0x44, Reason::kNone, true};
  const RequestActivity b{0xfffffffeu, 0xa3, Reason::kSinkTimeout, false};
  std::thread wa([&] { for (int i = 0; i < 20000; ++i) r.StoreRequestActivity(0, a); });
  std::thread wb([&] { for (int i = 0; i < 20000; ++i) r.StoreRequestActivity(0, b); });
  for (int i = 0; i < 20000; ++i) {
    const RequestActivity seen = r.LoadRequestActivity(0);
    ASSERT_TRUE(seen == a || seen == b || seen == RequestActivity{});
  }
  wa.join();
  wb.join();
}

}  // namespace
}  // namespace coapgate::registry
