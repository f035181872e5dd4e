// The publisher path allocates nothing per message in the steady state: a PublisherWorker
// with per-device templates (the template lookup by ICCID, the translation, the
// TELEMETRY_DATA and LOCATION envelopes, the settlement) over a sink that itself allocates
// nothing. Counted process-wide, so the test thread allocates nothing while counting either.
//
// This binary links tests/support/allocation_counter.cc (it replaces operator new); it is
// not built under TSan (tests/CMakeLists.txt).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "sinks/publisher_worker.h"
#include "tests/support/allocation_counter.h"

namespace coapgate::sinks {
namespace {

using namespace std::chrono_literals;

// Settles at once and remembers only counts.
class CountingSink final : public Sink {
 public:
  explicit CountingSink(Settlement* settlement) : settlement_(settlement) {}
  const std::string& label() const noexcept override { return label_; }
  bool Publish(const Event& event, uint64_t ticket) noexcept override {
    (event.kind == EventKind::kLocation ? locations_ : telemetry_).fetch_add(1);
    settlement_->Settle(ticket, true);
    return true;
  }
  void Service(short, uint64_t) noexcept override {}
  size_t outstanding() const noexcept override { return 0; }
  bool available() const noexcept override { return true; }
  void Abandon() noexcept override {}

  std::atomic<long> telemetry_{0};
  std::atomic<long> locations_{0};

 private:
  Settlement* settlement_;
  std::string label_ = "counting";
};

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = testing::TempDir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "w");
  EXPECT_NE(f, nullptr);
  std::fputs(text.c_str(), f);
  std::fclose(f);
  return path;
}

TEST(PublisherAllocation, DeviceTemplatesTranslateAndEnvelopesAllocateNothing) {
  const std::string templ = WriteFile(
      "alloc-location.json",
      R"({"sense":[{"asset":"gps.lon","custom_type":"location_long","value":{"byte":0,"bytelength":8,"type":"float","byteorder":"little"}},)"
      R"({"asset":"gps.lat","custom_type":"location_lat","value":{"byte":8,"bytelength":8,"type":"float","byteorder":"little"}},)"
      R"({"asset":"speed","value":{"byte":16,"bytelength":2,"type":"uint"}}]})");
  // 19-digit ICCIDs, past the small-string buffer: a key copy per lookup would allocate.
  const std::string devices = WriteFile(
      "alloc-devices.csv", "iccid,template\n8988280666000000001," + templ +
                               "\n8988280666000000002," + templ + "\n");
  auto templates = TemplateSet::Load("", devices);
  ASSERT_TRUE(templates) << templates.error();
  SnapshotHolder<TemplateSet> holder(*templates);

  Handoff handoff(16, 64, 1);
  std::atomic<bool> available{true};
  PublisherWorker worker(0, &available);
  auto owned = std::make_unique<CountingSink>(worker.settlement());
  CountingSink& sink = *owned;
  worker.AddSink(std::move(owned));
  worker.Start({&handoff}, &holder, false);

  char payload[18];
  const double lon = 6.956068;
  const double lat = 50.934544;
  std::memcpy(payload, &lon, 8);  // x86-64: little endian
  std::memcpy(payload + 8, &lat, 8);
  payload[16] = 0;
  payload[17] = 120;
  // Sends `count` messages, 8 at a time, and waits (bounded) for their completions; false if
  // one did not come.
  const auto round = [&](int count) {
    for (int sent = 0; sent < count; sent += 8) {
      for (int i = 0; i < 8; ++i) {
        uint32_t slot;
        if (!handoff.Acquire(&slot)) return false;
        InflightMessage& m = handoff.message(slot);
        m.received_ms = 1670598749915;
        m.message_id = static_cast<uint16_t>(sent + i);
        std::memcpy(m.iccid.data(), i % 2 == 0 ? "8988280666000000001" : "8988280666000000002", 19);
        m.iccid_length = 19;
        m.ip = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
        m.payload_length = sizeof(payload);
        std::memcpy(m.payload, payload, sizeof(payload));
        if (!handoff.PushOutbound(0, slot)) return false;
      }
      const uint64_t one = 1;
      if (write(worker.wake_fd(), &one, sizeof(one)) != 8) return false;
      for (int done = 0; done < 8;) {
        uint32_t slot;
        Outcome outcome;
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (!handoff.PopCompletion(&slot, &outcome)) {
          if (std::chrono::steady_clock::now() > deadline) return false;
          std::this_thread::sleep_for(1ms);
        }
        if (outcome != Outcome::kAccepted) return false;
        handoff.Release(slot);
        ++done;
      }
    }
    return true;
  };
  ASSERT_TRUE(round(16));  // warm-up: translators, buffers, grow once
  const long before = test::AllocationCount();
  const bool ok = round(400);
  const long allocations = test::AllocationCount() - before;
  ASSERT_TRUE(ok);
  EXPECT_EQ(allocations, 0);
  EXPECT_EQ(sink.telemetry_.load(), 416);
  EXPECT_EQ(sink.locations_.load(), 416);
  worker.RequestStop();
  worker.Join();
}

}  // namespace
}  // namespace coapgate::sinks
