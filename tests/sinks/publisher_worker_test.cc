// PublisherWorker's own logic: every sink must accept (worst status wins), settlement inside
// Publish, refusals, the availability flag for the shards, lanes, and shutdown (drain, then
// abandon). The sinks here are scripted implementations of coapgate's Sink interface, which is
// what is under test; the real MQTT, Kafka and file sinks have their own tests against real
// brokers and files.
#include "sinks/publisher_worker.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <limits>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "common/error.h"
#include "sinks/envelope.h"

namespace coapgate::sinks {
namespace {

using namespace std::chrono_literals;

// How a ScriptedSink answers Publish.
enum class Mode { kDeliverLater, kFailLater, kDeliverAtOnce, kRefuse };

class ScriptedSink final : public Sink {
 public:
  ScriptedSink(Settlement* settlement, Mode mode) : settlement_(settlement), mode_(mode) {}

  const std::string& label() const noexcept override { return label_; }

  bool Publish(const Event& event, uint64_t ticket) noexcept override {
    std::lock_guard lock(mutex_);
    seen_.emplace_back(event.envelope);
    kinds_.push_back(event.kind);
    switch (mode_) {
      case Mode::kRefuse:
        return false;
      case Mode::kDeliverAtOnce:
        settlement_->Settle(ticket, true);
        return true;
      default:
        held_.push_back(ticket);
        return true;
    }
  }

  void Service(short, uint64_t) noexcept override {
    std::lock_guard lock(mutex_);
    if (!release_) return;
    for (uint64_t ticket : held_) settlement_->Settle(ticket, mode_ == Mode::kDeliverLater);
    held_.clear();
  }
  int TimeoutMs(uint64_t) const noexcept override { return 5; }
  size_t outstanding() const noexcept override {
    std::lock_guard lock(mutex_);
    return held_.size();
  }
  bool available() const noexcept override { return available_.load(); }
  void Abandon() noexcept override {
    std::lock_guard lock(mutex_);
    for (uint64_t ticket : held_) settlement_->Settle(ticket, false);
    abandoned_ += held_.size();
    held_.clear();
  }

  // Test thread: let Service settle what is held (and everything after).
  void Release() {
    std::lock_guard lock(mutex_);
    release_ = true;
  }
  std::vector<std::string> seen() const {
    std::lock_guard lock(mutex_);
    return seen_;
  }
  std::vector<EventKind> kinds() const {
    std::lock_guard lock(mutex_);
    return kinds_;
  }
  size_t abandoned() const {
    std::lock_guard lock(mutex_);
    return abandoned_;
  }
  std::atomic<bool> available_{true};

 private:
  Settlement* settlement_;
  Mode mode_;
  std::string label_ = "scripted";
  mutable std::mutex mutex_;
  std::vector<uint64_t> held_;
  std::vector<std::string> seen_;
  std::vector<EventKind> kinds_;
  bool release_ = false;
  size_t abandoned_ = 0;
};

// `json` as the global template, written to `name` in the test directory.
Result<std::shared_ptr<const TemplateSet>, Error> GlobalTemplates(const std::string& name,
                                                                  std::string_view json) {
  const std::string path = testing::TempDir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return FailEnvironment("cannot write " + path);
  std::fputs(std::string(json).c_str(), f);
  std::fclose(f);
  return TemplateSet::Load(path, "");
}

// Reads a 2-byte unsigned integer at byte 0 (asset "t").
constexpr std::string_view kTwoByteTemplate =
    R"({"sense":[{"asset":"t","value":{"byte":0,"bytelength":2,"type":"uint"}}]})";

class PublisherWorkerTest : public testing::Test {
 protected:
  static constexpr uint32_t kLanes = 2;

  PublisherWorkerTest() : handoff_(16, 64, kLanes) {}

  ~PublisherWorkerTest() override {
    for (auto& w : workers_) {
      w->RequestStop();
      w->GiveUp();
      w->Join();
    }
  }

  PublisherWorker& AddWorker(uint32_t lane) {
    workers_.push_back(std::make_unique<PublisherWorker>(lane, &available_[lane]));
    return *workers_.back();
  }
  ScriptedSink& AddSink(PublisherWorker& worker, Mode mode) {
    auto sink = std::make_unique<ScriptedSink>(worker.settlement(), mode);
    ScriptedSink& ref = *sink;
    worker.AddSink(std::move(sink));
    return ref;
  }
  void StartAll(const SnapshotHolder<TemplateSet>* templates = nullptr, bool reject = false) {
    for (auto& w : workers_) w->Start({&handoff_}, templates, reject);
  }
  // StartAll with the location template as the global template, written to `name` in the test
  // directory. Call under ASSERT_NO_FATAL_FAILURE.
  void StartWithLocationTemplates(const char* name);

  uint32_t Send(std::string_view payload, uint32_t lane = 0) {
    uint32_t slot;
    EXPECT_TRUE(handoff_.Acquire(&slot));
    InflightMessage& m = handoff_.message(slot);
    m.received_ms = 1670598749915;
    m.message_id = static_cast<uint16_t>(slot);
    std::memcpy(m.iccid.data(), "8988280666000000001", 19);
    m.iccid_length = 19;
    m.ip = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
    m.payload_length = static_cast<uint16_t>(payload.size());
    std::memcpy(m.payload, payload.data(), payload.size());
    EXPECT_TRUE(handoff_.PushOutbound(lane, slot));
    const uint64_t one = 1;
    EXPECT_EQ(write(workers_[lane]->wake_fd(), &one, sizeof(one)), 8);
    return slot;
  }

  // The next completion, waiting a bounded time; false if none came.
  bool NextCompletion(uint32_t* slot, Outcome* outcome, std::chrono::milliseconds wait = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < deadline) {
      if (handoff_.PopCompletion(slot, outcome)) return true;
      std::this_thread::sleep_for(1ms);
    }
    return false;
  }

  std::optional<SnapshotHolder<TemplateSet>> location_templates_;
  Handoff handoff_;
  std::atomic<bool> available_[kLanes] = {true, true};
  std::vector<std::unique_ptr<PublisherWorker>> workers_;
};

TEST_F(PublisherWorkerTest, AcceptedOnlyOnceEverySinkDelivered) {
  PublisherWorker& w = AddWorker(0);
  ScriptedSink& a = AddSink(w, Mode::kDeliverAtOnce);
  ScriptedSink& b = AddSink(w, Mode::kDeliverLater);
  StartAll();
  const uint32_t sent = Send("hello");
  uint32_t slot;
  Outcome outcome;
  EXPECT_FALSE(NextCompletion(&slot, &outcome, 200ms)) << "completed before sink b settled";
  b.Release();
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  EXPECT_EQ(slot, sent);
  EXPECT_EQ(outcome, Outcome::kAccepted);
  ASSERT_EQ(a.seen().size(), 1u);
  EXPECT_EQ(a.seen(), b.seen());
  EXPECT_NE(a.seen()[0].find(R"("type":"TELEMETRY_DATA")"), std::string::npos);
  EXPECT_NE(a.seen()[0].find(R"("value":"aGVsbG8=")"), std::string::npos);
}

TEST_F(PublisherWorkerTest, ALifecycleMessageIsOneLifecycleEventNotTranslated) {
  // A template that fails on the empty payload: a LIFECYCLE message is never translated.
  auto templates = GlobalTemplates("worker-lifecycle-template.json", kTwoByteTemplate);
  ASSERT_TRUE(templates) << templates.error();
  SnapshotHolder<TemplateSet> holder(*templates);

  PublisherWorker& w = AddWorker(0);
  ScriptedSink& a = AddSink(w, Mode::kDeliverAtOnce);
  ScriptedSink& b = AddSink(w, Mode::kDeliverLater);
  StartAll(&holder, /*reject=*/true);
  uint32_t slot;
  ASSERT_TRUE(handoff_.Acquire(&slot));
  InflightMessage& m = handoff_.message(slot);
  m.lifecycle = true;
  m.received_ms = 1670598749915;
  std::memcpy(m.iccid.data(), "8988280666000000001", 19);
  m.iccid_length = 19;
  std::memcpy(m.imsi.data(), "901405100000001", 15);
  m.imsi_length = 15;
  m.ip = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 7};
  ASSERT_TRUE(handoff_.PushOutbound(0, slot));
  const uint64_t one = 1;
  ASSERT_EQ(write(w.wake_fd(), &one, sizeof(one)), 8);
  uint32_t done;
  Outcome outcome;
  EXPECT_FALSE(NextCompletion(&done, &outcome, 200ms)) << "completed before sink b settled";
  b.Release();
  ASSERT_TRUE(NextCompletion(&done, &outcome));
  EXPECT_EQ(done, slot);
  EXPECT_EQ(outcome, Outcome::kAccepted);
  EXPECT_EQ(a.kinds(), std::vector<EventKind>{EventKind::kLifecycle});
  EXPECT_EQ(a.seen(), b.seen());
  char id[kMessageIdTextLength];
  FormatMessageId(MakeLifecycleId("8988280666000000001"), id);
  EXPECT_EQ(a.seen().at(0),
            "{\"id\":\"" + std::string(id, sizeof(id)) +
                "\",\"type\":\"LIFECYCLE\",\"version\":\"1.0.0\",\"received\":\"1670598749915\","
                "\"device\":{\"iccid\":\"8988280666000000001\",\"imsi\":\"901405100000001\","
                "\"ip\":\"10.0.0.7\"},\"lifecycle\":{\"type\":\"DEVICE_FIRST_TIME_REGISTERED\","
                "\"message\":\"New Device successfully registered for the first time - "
                "8988280666000000001\"}}");
}

TEST_F(PublisherWorkerTest, OneRefusalMakesItUnavailableButTheOthersStillGetIt) {
  PublisherWorker& w = AddWorker(0);
  ScriptedSink& a = AddSink(w, Mode::kRefuse);
  ScriptedSink& b = AddSink(w, Mode::kDeliverAtOnce);
  StartAll();
  Send("x");
  uint32_t slot;
  Outcome outcome;
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  EXPECT_EQ(outcome, Outcome::kUnavailable);
  EXPECT_EQ(a.seen().size(), 1u);
  EXPECT_EQ(b.seen().size(), 1u);
}

TEST_F(PublisherWorkerTest, ALateFailureMakesItUnavailable) {
  PublisherWorker& w = AddWorker(0);
  AddSink(w, Mode::kDeliverAtOnce);
  ScriptedSink& failing = AddSink(w, Mode::kFailLater);
  failing.Release();
  StartAll();
  Send("x");
  uint32_t slot;
  Outcome outcome;
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  EXPECT_EQ(outcome, Outcome::kUnavailable);
}

TEST_F(PublisherWorkerTest, UntranslatablePayloadIsAnErrorEventAndBadPayloadWhenRejected) {
  // A template needing 2 bytes; the payload has 1.
  auto templates = GlobalTemplates("worker-template.json", kTwoByteTemplate);
  ASSERT_TRUE(templates) << templates.error();
  SnapshotHolder<TemplateSet> holder(*templates);

  PublisherWorker& w = AddWorker(0);
  ScriptedSink& sink = AddSink(w, Mode::kDeliverAtOnce);
  StartAll(&holder, /*reject=*/true);
  Send("\x01");
  uint32_t slot;
  Outcome outcome;
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  EXPECT_EQ(outcome, Outcome::kBadPayload);
  Send(std::string_view("\x00\x2a", 2));
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  EXPECT_EQ(outcome, Outcome::kAccepted);
  ASSERT_EQ(sink.kinds(), (std::vector<EventKind>{EventKind::kError, EventKind::kTelemetry}));
  EXPECT_NE(sink.seen()[0].find(R"("type":"ERROR")"), std::string::npos);
  EXPECT_NE(sink.seen()[1].find(R"("value":{"t":42})"), std::string::npos);
}

// T-loc: little-endian float64 longitude at 0, latitude at 8 (reference template).
constexpr std::string_view kLocationTemplate =
    R"({"sense":[{"asset":"longitude","custom_type":"location_long","value":{"byte":0,"bytelength":8,"type":"float","byteorder":"little"}},)"
    R"({"asset":"latitude","custom_type":"location_lat","value":{"byte":8,"bytelength":8,"type":"float","byteorder":"little"}}]})";

std::string LocationPayload(double lon, double lat) {
  std::string payload(16, '\0');
  std::memcpy(payload.data(), &lon, 8);  // the host is little endian (x86-64)
  std::memcpy(payload.data() + 8, &lat, 8);
  return payload;
}

// The location template as the global template, written to `name` in the test directory.
Result<std::shared_ptr<const TemplateSet>, Error> LocationTemplates(const char* name) {
  return GlobalTemplates(name, kLocationTemplate);
}

void PublisherWorkerTest::StartWithLocationTemplates(const char* name) {
  auto templates = LocationTemplates(name);
  ASSERT_TRUE(templates) << templates.error();
  location_templates_.emplace(*templates);
  StartAll(&*location_templates_);
}

TEST_F(PublisherWorkerTest, ALocationIsASecondEventAndTheMessageWaitsForBoth) {
  PublisherWorker& w = AddWorker(0);
  ScriptedSink& at_once = AddSink(w, Mode::kDeliverAtOnce);
  ScriptedSink& later = AddSink(w, Mode::kDeliverLater);
  ASSERT_NO_FATAL_FAILURE(StartWithLocationTemplates("worker-location.json"));
  Send(LocationPayload(6.956068, 50.934544));
  uint32_t slot;
  Outcome outcome;
  EXPECT_FALSE(NextCompletion(&slot, &outcome, 200ms)) << "completed before sink b settled";
  later.Release();
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  EXPECT_EQ(outcome, Outcome::kAccepted);
  const std::vector<EventKind> both = {EventKind::kTelemetry, EventKind::kLocation};
  EXPECT_EQ(at_once.kinds(), both);
  EXPECT_EQ(later.kinds(), both);
  EXPECT_EQ(at_once.seen(), later.seen());
  ASSERT_EQ(at_once.seen().size(), 2u);
  EXPECT_NE(at_once.seen()[0].find(R"("value":{"longitude":6.956068,"latitude":50.934544})"),
            std::string::npos);
  const std::string location = at_once.seen()[1];
  EXPECT_NE(location.find(R"("type":"LOCATION")"), std::string::npos);
  EXPECT_NE(location.find(R"("location":{"source":"GPS","coordinates":["6.956068","50.934544"]}})"),
            std::string::npos);
  EXPECT_NE(location.substr(0, 44), at_once.seen()[0].substr(0, 44)) << "the ids must differ";

  // Only one axis a number (NaN latitude): the TELEMETRY_DATA alone, accepted.
  Send(LocationPayload(6.5, std::numeric_limits<double>::quiet_NaN()));
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  EXPECT_EQ(outcome, Outcome::kAccepted);
  EXPECT_EQ(at_once.kinds().size(), 3u);
  EXPECT_EQ(at_once.kinds().back(), EventKind::kTelemetry);
}

TEST_F(PublisherWorkerTest, ALocationSinkFailureMakesTheMessageUnavailable) {
  PublisherWorker& w = AddWorker(0);
  ScriptedSink& failing = AddSink(w, Mode::kFailLater);
  failing.Release();
  ASSERT_NO_FATAL_FAILURE(StartWithLocationTemplates("worker-location-fail.json"));
  Send(LocationPayload(1.5, 2.5));
  uint32_t slot;
  Outcome outcome;
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  EXPECT_EQ(outcome, Outcome::kUnavailable);
  EXPECT_EQ(failing.kinds(), (std::vector<EventKind>{EventKind::kTelemetry, EventKind::kLocation}));
  EXPECT_FALSE(NextCompletion(&slot, &outcome, 100ms)) << "completed twice";
}

TEST_F(PublisherWorkerTest, LanesAreServedByTheirOwnWorkers) {
  PublisherWorker& w0 = AddWorker(0);
  PublisherWorker& w1 = AddWorker(1);
  ScriptedSink& s0 = AddSink(w0, Mode::kDeliverAtOnce);
  ScriptedSink& s1 = AddSink(w1, Mode::kDeliverAtOnce);
  StartAll();
  Send("zero", 0);
  Send("one", 1);
  uint32_t slot;
  Outcome outcome;
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  ASSERT_EQ(s0.seen().size(), 1u);
  ASSERT_EQ(s1.seen().size(), 1u);
  EXPECT_NE(s0.seen()[0].find("emVybw=="), std::string::npos);  // "zero"
  EXPECT_NE(s1.seen()[0].find("b25l"), std::string::npos);      // "one"
}

TEST_F(PublisherWorkerTest, AvailabilityFollowsTheSinks) {
  PublisherWorker& w = AddWorker(0);
  ScriptedSink& sink = AddSink(w, Mode::kDeliverAtOnce);
  StartAll();
  sink.available_ = false;
  for (int i = 0; i < 1000 && available_[0].load(); ++i) std::this_thread::sleep_for(5ms);
  EXPECT_FALSE(available_[0].load());
  sink.available_ = true;
  for (int i = 0; i < 1000 && !available_[0].load(); ++i) std::this_thread::sleep_for(5ms);
  EXPECT_TRUE(available_[0].load());
}

TEST_F(PublisherWorkerTest, AMessageForADownSinkIsCountedUnderDownAndNotOffered) {
  // Queued before the shards saw the sink go down: the worker answers 5.03 without offering
  // it, and the down sink counts it, so the 5.03 has a cause in /metrics.
  PublisherWorker& w = AddWorker(0);
  ScriptedSink& up = AddSink(w, Mode::kDeliverAtOnce);
  ScriptedSink& down = AddSink(w, Mode::kDeliverAtOnce);
  down.available_ = false;
  StartAll();
  Send("late");
  uint32_t slot;
  Outcome outcome;
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  EXPECT_EQ(outcome, Outcome::kUnavailable);
  EXPECT_TRUE(up.seen().empty()) << "not offered to the sink that is up either";
  EXPECT_EQ(down.counters().Get(SinkFailure::kDown), 1u);
  EXPECT_EQ(down.counters().refused.load(), 1u);
  EXPECT_EQ(up.counters().refused.load(), 0u);
}

TEST_F(PublisherWorkerTest, StopWaitsForOutstandingThenGiveUpAbandons) {
  PublisherWorker& w = AddWorker(0);
  ScriptedSink& sink = AddSink(w, Mode::kDeliverLater);
  StartAll();
  Send("a");
  Send("b");
  for (int i = 0; i < 2000 && sink.seen().size() < 2; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(sink.seen().size(), 2u) << "the worker did not publish within 10 s";
  w.RequestStop();
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(w.finished()) << "finished with messages outstanding";
  w.GiveUp();
  w.Join();
  EXPECT_TRUE(w.finished());
  EXPECT_EQ(sink.abandoned(), 2u);
  uint32_t slot;
  Outcome outcome;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(NextCompletion(&slot, &outcome));
    EXPECT_EQ(outcome, Outcome::kUnavailable);
  }
}

TEST_F(PublisherWorkerTest, StopFinishesOnceEverythingSettled) {
  PublisherWorker& w = AddWorker(0);
  ScriptedSink& sink = AddSink(w, Mode::kDeliverLater);
  StartAll();
  Send("a");
  for (int i = 0; i < 2000 && sink.seen().empty(); ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(sink.seen().size(), 1u) << "the worker did not publish within 10 s";
  w.RequestStop();
  sink.Release();
  for (int i = 0; i < 2000 && !w.finished(); ++i) std::this_thread::sleep_for(5ms);
  EXPECT_TRUE(w.finished());
  uint32_t slot;
  Outcome outcome;
  ASSERT_TRUE(NextCompletion(&slot, &outcome));
  EXPECT_EQ(outcome, Outcome::kAccepted);
}

}  // namespace
}  // namespace coapgate::sinks
