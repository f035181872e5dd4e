// The MQTT sink against a real mosquitto broker (reference §3.4): what a subscriber receives
// in each format and protocol, that a QoS 1 ticket settles only from the PUBACK, and the
// faults: broker absent at start (M01), kill -9 with unacknowledged messages (M02), a hung
// broker (M03), authentication and TLS (M06). No mocks; the tests drive the sink the way a
// publisher worker does (poll on PollFd for at most TimeoutMs, then Service) and wait with
// deadlines, never asserting on speed.
#include "sinks/mqtt_sink.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/support/mosquitto_broker.h"

namespace coapgate::sinks {
namespace {

using std::chrono::milliseconds;
using test::MosquittoBroker;
using test::MosquittoBrokerOptions;
using test::MqttSubscriber;
using test::ReceivedMessage;
using Properties = std::vector<std::pair<std::string, std::string>>;

constexpr auto kWait = std::chrono::seconds(10);  // generous: only a broken sink reaches it

class RecordingSettlement final : public Settlement {
 public:
  void Settle(uint64_t ticket, bool delivered) noexcept override {
    settled.emplace_back(ticket, delivered);
  }
  [[nodiscard]] size_t Count(bool delivered) const {
    return static_cast<size_t>(std::count_if(settled.begin(), settled.end(),
                                             [&](const auto& s) { return s.second == delivered; }));
  }
  std::vector<std::pair<uint64_t, bool>> settled;
};

// Owns the strings an Event views.
struct TestEvent {
  explicit TestEvent(int n = 0) {
    char text[40];
    std::snprintf(text, sizeof(text), "00000000-0000-4000-8000-%012d", n);
    id = text;
    envelope = R"({"id":")" + id + R"(","type":"TELEMETRY_DATA","n":)" + std::to_string(n) + "}";
  }
  [[nodiscard]] Event View() const {
    Event e;
    e.kind = kind;
    e.id = id;
    e.received_ms = received_ms;
    e.iccid = iccid;
    e.imsi = imsi;
    e.ip = ip;
    e.topic = topic;
    e.payload = std::as_bytes(std::span(payload));
    e.error = error;
    e.envelope = envelope;
    return e;
  }

  EventKind kind = EventKind::kTelemetry;
  std::string id;
  uint64_t received_ms = 1670598749915;
  std::string iccid = "8988280666000002864";
  std::string imsi = "901405100002864";
  std::string ip = "100.91.200.24";
  std::string topic = "sensors/temp";
  std::string payload = std::string("Hi\0\x01\xff", 5);
  std::string error;
  std::string envelope;
};

uint64_t NowMs() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000 + static_cast<uint64_t>(now.tv_nsec) / 1000000;
}

// One turn of a publisher worker's loop. The wait is capped so that conditions fed by other
// threads (the subscriber) are seen promptly.
void Step(MqttSink& sink) {
  short events = 0;
  const int fd = sink.PollFd(&events);
  int wait = sink.TimeoutMs(NowMs());
  if (wait < 0 || wait > 20) wait = 20;
  pollfd p{fd, events, 0};
  const int ready = poll(&p, fd >= 0 ? 1 : 0, wait);
  sink.Service(ready > 0 ? p.revents : 0, NowMs());
}

template <class Done>
bool Drive(MqttSink& sink, Done done, milliseconds timeout = kWait) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    Step(sink);
  }
  return true;
}

void DriveFor(MqttSink& sink, milliseconds duration) {
  Drive(sink, [] { return false; }, duration);
}

bool Connect(MqttSink& sink) {
  return Drive(sink, [&] { return sink.available(); });
}

MqttSinkConfig Config(uint16_t port) {
  MqttSinkConfig config;
  config.host = "127.0.0.1";
  config.port = port;
  config.client_id = "sink-test";
  return config;
}

std::unique_ptr<MqttSink> MakeSink(const MqttSinkConfig& config, Settlement* settlement,
                                   int connection = 0) {
  auto sink = MqttSink::Create(config, connection, settlement);
  EXPECT_TRUE(sink.has_value()) << sink.error();
  return sink ? std::move(*sink) : nullptr;
}

size_t Occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

MosquittoBrokerOptions TlsOptions() {
  MosquittoBrokerOptions options;
  options.tls = true;
  return options;
}

// A broker and a subscriber to it, started for each test.
class MqttSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(broker_.Start()) << broker_.error();
    subscriber_ = std::make_unique<MqttSubscriber>(broker_.port());
    ASSERT_TRUE(subscriber_->WaitSubscribed(1)) << broker_.Log();
  }

  // Publishes `event` under `ticket`, drives the sink until it is settled, and returns what
  // the subscriber received.
  ReceivedMessage PublishOne(MqttSink& sink, const TestEvent& event, uint64_t ticket = 1) {
    const size_t before = subscriber_->size();
    EXPECT_TRUE(sink.Publish(event.View(), ticket));
    EXPECT_TRUE(Drive(sink, [&] { return sink.outstanding() == 0; }));
    if (!subscriber_->WaitFor(before + 1)) {
      ADD_FAILURE() << "nothing received; broker log:\n" << broker_.Log();
      return {};
    }
    return subscriber_->messages()[before];
  }

  // A sink to this test's broker, Config() as `adjust` changes it, connected; nullptr (with
  // the failure recorded) when it cannot be made or does not connect.
  std::unique_ptr<MqttSink> ConnectedSink(const std::function<void(MqttSinkConfig&)>& adjust) {
    MqttSinkConfig config = Config(broker_.port());
    adjust(config);
    auto sink = MakeSink(config, &settlement_);
    if (sink == nullptr || !Connect(*sink)) {
      ADD_FAILURE() << "the sink did not connect; broker log:\n" << broker_.Log();
      return nullptr;
    }
    return sink;
  }

  MosquittoBroker broker_;
  std::unique_ptr<MqttSubscriber> subscriber_;
  RecordingSettlement settlement_;
};

TEST_F(MqttSinkTest, EnvelopeQos1SettlesOnlyFromThePuback) {
  auto sink = MakeSink(Config(broker_.port()), &settlement_, 3);
  ASSERT_TRUE(sink);
  EXPECT_EQ(sink->label(), "mqtt://127.0.0.1:" + std::to_string(broker_.port()) + "#3");
  ASSERT_TRUE(Connect(*sink)) << broker_.Log();
  // Connection 3 has client id "<id>-3"; MQTT v5 (p5), clean start (c1), keepalive 10 s.
  EXPECT_NE(broker_.Log().find("as sink-test-3 (p5, c1, k10)"), std::string::npos)
      << broker_.Log();

  const TestEvent event(1);
  ASSERT_TRUE(sink->Publish(event.View(), 42));
  EXPECT_TRUE(settlement_.settled.empty()) << "settled before a PUBACK could have been read";
  EXPECT_EQ(sink->outstanding(), 1u);
  ASSERT_TRUE(Drive(*sink, [&] { return !settlement_.settled.empty(); }));
  EXPECT_EQ(settlement_.settled, (std::vector<std::pair<uint64_t, bool>>{{42, true}}));
  EXPECT_EQ(sink->outstanding(), 0u);

  ASSERT_TRUE(subscriber_->WaitFor(1));
  const ReceivedMessage m = subscriber_->messages()[0];
  EXPECT_EQ(m.topic, "8988280666000002864/sensors/temp");
  EXPECT_EQ(m.qos, 1);
  EXPECT_FALSE(m.retain);
  EXPECT_EQ(m.payload, event.envelope);
  EXPECT_EQ(m.content_type, "application/json");
  EXPECT_EQ(m.user_properties, (Properties{{"id", event.id}}));

  EXPECT_EQ(sink->counters().delivered.load(), 1u);
  EXPECT_EQ(sink->counters().connects.load(), 1u);
  EXPECT_EQ(sink->counters().refused.load(), 0u);
  EXPECT_EQ(sink->counters().failed.load(), 0u);
}

TEST_F(MqttSinkTest, DefaultClientIdNamesHostAndProcess) {
  MqttSinkConfig config = Config(broker_.port());
  config.client_id.clear();
  auto sink = MakeSink(config, &settlement_);
  ASSERT_TRUE(sink);
  ASSERT_TRUE(Connect(*sink));
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  const std::string id = std::string("coapgate-") + host + "-" + std::to_string(getpid()) + "-0";
  EXPECT_NE(broker_.Log().find("as " + id + " "), std::string::npos) << broker_.Log();
}

TEST_F(MqttSinkTest, WithoutTopicTheIccidIsTheTopic) {
  auto sink = MakeSink(Config(broker_.port()), &settlement_);
  ASSERT_TRUE(sink && Connect(*sink));
  TestEvent event;
  event.topic.clear();
  EXPECT_EQ(PublishOne(*sink, event).topic, "8988280666000002864");
}

TEST_F(MqttSinkTest, ErrorEventGoesToTheErrorTopic) {
  auto sink = MakeSink(Config(broker_.port()), &settlement_);
  ASSERT_TRUE(sink && Connect(*sink));
  TestEvent event;
  event.kind = EventKind::kError;
  event.error = "Asset path:x, Error: can't extract [0:4] from 2 bytes";
  event.envelope = R"({"type":"ERROR"})";
  const ReceivedMessage m = PublishOne(*sink, event);
  EXPECT_EQ(m.topic, "error");
  EXPECT_EQ(m.payload, event.envelope);
  EXPECT_EQ(m.user_properties, (Properties{{"id", event.id}}));
  EXPECT_EQ(settlement_.settled, (std::vector<std::pair<uint64_t, bool>>{{1, true}}));
}

TEST_F(MqttSinkTest, LifecycleEventGoesToTheLifecycleTopicAsItsJson) {
  MqttSinkConfig config = Config(broker_.port());
  config.format = MqttFormat::kRaw;  // the event has no device bytes: its JSON in either format
  auto sink = MakeSink(config, &settlement_);
  ASSERT_TRUE(sink && Connect(*sink));
  TestEvent event;
  event.kind = EventKind::kLifecycle;
  event.topic.clear();
  event.payload.clear();
  event.envelope = R"({"type":"LIFECYCLE"})";
  ReceivedMessage m = PublishOne(*sink, event);
  EXPECT_EQ(m.topic, "lifecycle");
  EXPECT_EQ(m.payload, event.envelope);

  config.format = MqttFormat::kEnvelope;
  config.lifecycle_topic = "fleet/{iccid}/lifecycle";
  config.client_id = "sink-test-custom";
  auto custom = MakeSink(config, &settlement_);
  ASSERT_TRUE(custom && Connect(*custom));
  m = PublishOne(*custom, event, 2);
  EXPECT_EQ(m.topic, "fleet/8988280666000002864/lifecycle");
  EXPECT_EQ(m.payload, event.envelope);
}

TEST_F(MqttSinkTest, CustomTopicTemplates) {
  auto sink = ConnectedSink([](MqttSinkConfig& c) {
    c.topic_template = "coap/{imsi}/{iccid}/{t}";
    c.error_topic = "alerts/{iccid}";
  });
  ASSERT_NE(sink, nullptr);
  TestEvent event;
  EXPECT_EQ(PublishOne(*sink, event, 1).topic,
            "coap/901405100002864/8988280666000002864/sensors/temp");
  event.topic.clear();
  EXPECT_EQ(PublishOne(*sink, event, 2).topic, "coap/901405100002864/8988280666000002864");
  event.kind = EventKind::kError;
  event.topic = "sensors";
  EXPECT_EQ(PublishOne(*sink, event, 3).topic, "alerts/8988280666000002864");
}

TEST_F(MqttSinkTest, RawFormatCarriesTheBytesAndTheEnvelopeAsUserProperties) {
  auto sink = ConnectedSink([](MqttSinkConfig& c) { c.format = MqttFormat::kRaw; });
  ASSERT_NE(sink, nullptr);

  TestEvent event(7);
  ReceivedMessage m = PublishOne(*sink, event, 1);
  EXPECT_EQ(m.topic, "8988280666000002864/sensors/temp");
  EXPECT_EQ(m.payload, event.payload);  // the device's bytes, NUL and 0xff included
  EXPECT_EQ(m.content_type, "");
  EXPECT_EQ(m.user_properties, (Properties{{"id", event.id},
                                           {"type", "TELEMETRY_DATA"},
                                           {"source", "COAP"},
                                           {"version", "1.0.0"},
                                           {"received", "1670598749915"},
                                           {"iccid", "8988280666000002864"},
                                           {"imsi", "901405100002864"},
                                           {"ip", "100.91.200.24"},
                                           {"topic", "sensors/temp"}}));

  // Without IMSI and topic those properties are left out; ERROR adds the error text.
  TestEvent error(8);
  error.kind = EventKind::kError;
  error.imsi.clear();
  error.topic.clear();
  error.ip = "2001:db8::1";
  error.error = "Asset path:a, Error: can't extract [0:4] from 5 bytes";
  m = PublishOne(*sink, error, 2);
  EXPECT_EQ(m.topic, "error");
  EXPECT_EQ(m.payload, error.payload);
  EXPECT_EQ(m.user_properties, (Properties{{"id", error.id},
                                           {"type", "ERROR"},
                                           {"source", "COAP"},
                                           {"version", "1.0.0"},
                                           {"received", "1670598749915"},
                                           {"iccid", "8988280666000002864"},
                                           {"ip", "2001:db8::1"},
                                           {"error", error.error}}));
  EXPECT_EQ(settlement_.Count(true), 2u);
}

TEST_F(MqttSinkTest, Qos0SettlesInsidePublish) {
  auto sink = ConnectedSink([](MqttSinkConfig& c) { c.qos = 0; });
  ASSERT_NE(sink, nullptr);
  const TestEvent event(3);
  ASSERT_TRUE(sink->Publish(event.View(), 5));
  EXPECT_EQ(settlement_.settled, (std::vector<std::pair<uint64_t, bool>>{{5, true}}));
  EXPECT_EQ(sink->outstanding(), 0u);
  ASSERT_TRUE(Drive(*sink, [&] { return subscriber_->size() == 1; }));
  const ReceivedMessage m = subscriber_->messages()[0];
  EXPECT_EQ(m.qos, 0);
  EXPECT_EQ(m.payload, event.envelope);
  DriveFor(*sink, milliseconds(100));  // on_publish for QoS 0 must not settle it again
  EXPECT_EQ(settlement_.settled.size(), 1u);
  EXPECT_EQ(sink->counters().delivered.load(), 1u);
}

// M03 for QoS 0: nothing is acknowledged, so the bound is on what the socket could not take;
// a hung broker makes Publish refuse instead of growing libmosquitto's queue.
TEST_F(MqttSinkTest, Qos0AgainstAHungBrokerRefusesOnceTheSocketIsFull) {
  auto sink = ConnectedSink([](MqttSinkConfig& c) {
    c.qos = 0;
    c.max_inflight = 10;
  });
  ASSERT_NE(sink, nullptr);
  broker_.Pause();
  TestEvent event;
  event.envelope.assign(4000, 'x');  // fills the kernel's socket buffers sooner
  size_t accepted = 0;
  // Loopback buffers hold some megabytes; the bound must be reached well before 100000.
  while (accepted < 100000 && sink->Publish(event.View(), accepted)) ++accepted;
  EXPECT_LT(accepted, 100000u);
  EXPECT_GE(accepted, 10u) << "max_inflight unwritten ones at least";
  EXPECT_EQ(sink->counters().refused.load(), 1u);
  EXPECT_EQ(settlement_.settled.size(), accepted);
  EXPECT_FALSE(sink->Publish(event.View(), accepted)) << "still full";
  broker_.Resume();
  // Once the broker reads again the queue drains and Publish accepts again.
  ASSERT_TRUE(Drive(*sink, [&] { return sink->Publish(TestEvent(1).View(), 999999); }));
}

TEST_F(MqttSinkTest, Protocol311PublishesWithoutProperties) {
  auto sink = ConnectedSink([](MqttSinkConfig& c) { c.protocol = 4; });
  ASSERT_NE(sink, nullptr);
  EXPECT_NE(broker_.Log().find("as sink-test-0 (p2, c1, k10)"), std::string::npos)
      << "mosquitto logs MQTT 3.1.1 as p2:\n" << broker_.Log();
  const TestEvent event(4);
  const ReceivedMessage m = PublishOne(*sink, event);
  EXPECT_EQ(m.topic, "8988280666000002864/sensors/temp");
  EXPECT_EQ(m.qos, 1);
  EXPECT_EQ(m.payload, event.envelope);
  EXPECT_TRUE(m.user_properties.empty());
  EXPECT_EQ(m.content_type, "");
  EXPECT_EQ(settlement_.settled, (std::vector<std::pair<uint64_t, bool>>{{1, true}}));
}

// M02: the broker hangs with messages unacknowledged, then dies (kill -9) and comes back on
// the same port. The tickets stay outstanding across the outage; libmosquitto resends the
// messages with DUP after the reconnect and their PUBACKs settle them.
TEST_F(MqttSinkTest, KillNineWithUnacknowledgedMessagesResendsThemAll) {
  auto sink = MakeSink(Config(broker_.port()), &settlement_);
  ASSERT_TRUE(sink && Connect(*sink));
  constexpr int kMessages = 30;
  std::vector<TestEvent> events;
  for (int i = 0; i < kMessages; ++i) events.emplace_back(100 + i);

  broker_.Pause();  // so that no PUBACK can come back
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE(sink->Publish(events[static_cast<size_t>(i)].View(), 1000 + i));
  }
  DriveFor(*sink, milliseconds(200));
  EXPECT_TRUE(settlement_.settled.empty());
  EXPECT_EQ(sink->outstanding(), static_cast<size_t>(kMessages));

  broker_.Kill9();
  ASSERT_TRUE(Drive(*sink, [&] { return !sink->available(); }));
  EXPECT_LE(sink->TimeoutMs(NowMs()), 150) << "first retry after 100 ms ± 50 %";
  EXPECT_EQ(sink->outstanding(), static_cast<size_t>(kMessages)) << "kept, not failed";
  EXPECT_FALSE(sink->Publish(TestEvent(999).View(), 1)) << "refused while down";
  EXPECT_EQ(sink->counters().Get(SinkFailure::kDown), 1u) << "counted under its cause";
  DriveFor(*sink, milliseconds(300));  // a few failed attempts against the dead port

  ASSERT_TRUE(broker_.Restart()) << broker_.error();
  // The subscriber's session did not survive the crash: it must be subscribed again before
  // the sink resends, or the broker has nobody to forward the messages to.
  ASSERT_TRUE(subscriber_->WaitSubscribed(2)) << broker_.Log();
  ASSERT_TRUE(Drive(*sink, [&] { return settlement_.settled.size() >= kMessages; }))
      << settlement_.settled.size() << " settled; broker log:\n" << broker_.Log();

  std::set<uint64_t> tickets;
  for (const auto& [ticket, delivered] : settlement_.settled) {
    EXPECT_TRUE(delivered) << ticket;
    EXPECT_TRUE(tickets.insert(ticket).second) << "settled twice: " << ticket;
  }
  EXPECT_EQ(tickets.size(), static_cast<size_t>(kMessages));
  DriveFor(*sink, milliseconds(100));
  EXPECT_EQ(settlement_.settled.size(), static_cast<size_t>(kMessages));

  ASSERT_TRUE(subscriber_->WaitFor(kMessages));
  std::set<std::string> payloads;
  for (const ReceivedMessage& m : subscriber_->messages()) payloads.insert(m.payload);
  for (const TestEvent& e : events) EXPECT_EQ(payloads.count(e.envelope), 1u) << e.id;

  EXPECT_EQ(sink->counters().connects.load(), 2u);
  EXPECT_EQ(sink->counters().disconnects.load(), 1u);
  EXPECT_EQ(sink->counters().delivered.load(), static_cast<uint64_t>(kMessages));
  // The resent PUBLISHes carried DUP (d1) and QoS 1 (q1).
  EXPECT_GE(Occurrences(broker_.Log(), "Received PUBLISH from sink-test-0 (d1, q1"),
            static_cast<size_t>(kMessages))
      << broker_.Log();
}

// M03: a hung broker (SIGSTOP) holds PUBACKs back: past max_inflight Publish refuses at once
// instead of queueing; after SIGCONT everything outstanding settles.
TEST_F(MqttSinkTest, HungBrokerHitsTheInflightCapThenRecovers) {
  auto sink = ConnectedSink([](MqttSinkConfig& c) { c.max_inflight = 5; });
  ASSERT_NE(sink, nullptr);

  broker_.Pause();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(sink->Publish(TestEvent(i).View(), 10 + i));
  EXPECT_FALSE(sink->Publish(TestEvent(5).View(), 15));
  EXPECT_EQ(sink->counters().refused.load(), 1u);
  EXPECT_EQ(sink->counters().Get(SinkFailure::kBackpressure), 1u);
  DriveFor(*sink, milliseconds(300));
  EXPECT_TRUE(settlement_.settled.empty());
  EXPECT_TRUE(sink->available()) << "hung, not lost: keepalive (10 s) has not run out";
  EXPECT_FALSE(sink->Publish(TestEvent(5).View(), 15));

  broker_.Resume();
  ASSERT_TRUE(Drive(*sink, [&] { return settlement_.settled.size() == 5; }));
  EXPECT_EQ(settlement_.Count(true), 5u);
  ASSERT_TRUE(sink->Publish(TestEvent(5).View(), 15));
  ASSERT_TRUE(Drive(*sink, [&] { return settlement_.settled.size() == 6; }));
  EXPECT_EQ(settlement_.Count(true), 6u);
  EXPECT_TRUE(subscriber_->WaitFor(6));
}

// The broker's Receive Maximum (mosquitto's default 20) is below max_inflight: libmosquitto
// queues the rest and releases one per PUBACK, which the sink must read in time.
TEST(MqttSink, BeyondTheBrokersReceiveMaximumEverythingSettles) {
  MosquittoBrokerOptions options;
  options.max_inflight_messages = 20;
  MosquittoBroker broker(options);
  ASSERT_TRUE(broker.Start()) << broker.error();
  MqttSubscriber subscriber(broker.port());
  ASSERT_TRUE(subscriber.WaitSubscribed(1));
  RecordingSettlement settlement;
  auto sink = MakeSink(Config(broker.port()), &settlement);
  ASSERT_TRUE(sink && Connect(*sink));

  constexpr size_t kMessages = 2000;
  size_t published = 0;
  // In bursts up to the in-flight cap (1000), with the worker loop in between, as under load.
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (published < kMessages && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < 300 && published < kMessages && sink->outstanding() < 1000; ++i) {
      ASSERT_TRUE(sink->Publish(TestEvent(static_cast<int>(published)).View(), published));
      ++published;
    }
    Step(*sink);
  }
  ASSERT_TRUE(Drive(*sink, [&] { return settlement.settled.size() == kMessages; }))
      << settlement.settled.size();
  EXPECT_EQ(settlement.Count(true), kMessages);
  EXPECT_EQ(sink->outstanding(), 0u);
  EXPECT_TRUE(subscriber.WaitFor(kMessages));
}

// A broker hung for longer than the keepalive is given up (libmosquitto sends PINGREQ after
// one silent interval and closes after a second); the tickets stay outstanding and settle
// once it answers again. The slowest test: keepalive_s is at least 5.
TEST_F(MqttSinkTest, HungBrokerIsNoticedByKeepaliveAndItsTicketsSurvive) {
  auto sink = ConnectedSink([](MqttSinkConfig& c) { c.keepalive_s = 5; });
  ASSERT_NE(sink, nullptr);
  broker_.Pause();
  ASSERT_TRUE(sink->Publish(TestEvent(1).View(), 1));
  ASSERT_TRUE(sink->Publish(TestEvent(2).View(), 2));
  EXPECT_EQ(sink->TimeoutMs(NowMs()), 1000) << "libmosquitto's keepalive clock needs ticks";
  ASSERT_TRUE(Drive(*sink, [&] { return !sink->available(); }, std::chrono::seconds(20)));
  EXPECT_EQ(sink->counters().disconnects.load(), 1u);
  EXPECT_EQ(sink->outstanding(), 2u);
  EXPECT_TRUE(settlement_.settled.empty());

  broker_.Resume();
  ASSERT_TRUE(Drive(*sink, [&] { return settlement_.settled.size() == 2; }))
      << broker_.Log();
  EXPECT_EQ(settlement_.Count(true), 2u);
  EXPECT_TRUE(sink->available());
}

TEST_F(MqttSinkTest, AbandonSettlesEveryOutstandingTicketFalseOnce) {
  auto sink = MakeSink(Config(broker_.port()), &settlement_);
  ASSERT_TRUE(sink && Connect(*sink));
  broker_.Pause();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(sink->Publish(TestEvent(i).View(), 20 + i));
  sink->Abandon();
  EXPECT_EQ(sink->outstanding(), 0u);
  ASSERT_EQ(settlement_.settled.size(), 3u);
  EXPECT_EQ(settlement_.Count(false), 3u);
  EXPECT_EQ(sink->counters().failed.load(), 3u);
  sink->Abandon();
  EXPECT_EQ(settlement_.settled.size(), 3u);

  // The PUBACKs that come once the broker wakes up find no ticket.
  broker_.Resume();
  ASSERT_TRUE(subscriber_->WaitFor(3));
  DriveFor(*sink, milliseconds(300));
  EXPECT_EQ(settlement_.settled.size(), 3u);
  EXPECT_EQ(sink->counters().delivered.load(), 0u);
}

TEST_F(MqttSinkTest, RefusesBeforeTheFirstService) {
  auto sink = MakeSink(Config(broker_.port()), &settlement_);
  ASSERT_TRUE(sink);
  EXPECT_FALSE(sink->available());
  short events = 1;
  EXPECT_EQ(sink->PollFd(&events), -1);
  EXPECT_EQ(events, 0);
  EXPECT_EQ(sink->TimeoutMs(NowMs()), 0) << "the first attempt is due at once";
  EXPECT_FALSE(sink->Publish(TestEvent().View(), 1));
  EXPECT_EQ(sink->counters().refused.load(), 1u);
  EXPECT_TRUE(settlement_.settled.empty());
}

// M01: no broker at start is not an error; Publish refuses until it is there.
TEST(MqttSink, BrokerAbsentAtStartConnectsOnceItIsUp) {
  MosquittoBroker broker;
  RecordingSettlement settlement;
  auto sink = MakeSink(Config(broker.port()), &settlement);
  ASSERT_TRUE(sink);
  DriveFor(*sink, milliseconds(300));
  EXPECT_FALSE(sink->available());
  EXPECT_FALSE(sink->Publish(TestEvent().View(), 1));
  EXPECT_EQ(sink->counters().refused.load(), 1u);
  EXPECT_EQ(sink->counters().connects.load(), 0u);

  ASSERT_TRUE(broker.Start()) << broker.error();
  MqttSubscriber subscriber(broker.port());
  ASSERT_TRUE(subscriber.WaitSubscribed(1));
  ASSERT_TRUE(Connect(*sink)) << broker.Log();
  ASSERT_TRUE(sink->Publish(TestEvent().View(), 2));
  ASSERT_TRUE(Drive(*sink, [&] { return !settlement.settled.empty(); }));
  EXPECT_EQ(settlement.settled, (std::vector<std::pair<uint64_t, bool>>{{2, true}}));
  EXPECT_TRUE(subscriber.WaitFor(1));
}

// The reconnect schedule, on a clock the test advances itself: 100 ms doubling to 5 s, each
// delay within ±50 %.
TEST(MqttSink, BackoffDoublesToFiveSecondsWithJitter) {
  MosquittoBroker broker;  // never started: its port refuses connections
  RecordingSettlement settlement;
  auto sink = MakeSink(Config(broker.port()), &settlement);
  ASSERT_TRUE(sink);
  uint64_t now = 1'000'000;
  uint64_t base = 100;
  std::set<int> capped_delays;
  for (int attempt = 0; attempt < 10; ++attempt) {
    sink->Service(0, now);  // the attempt is due
    // Let the refusal arrive (synchronously, or as POLLERR on the connecting socket).
    for (int turn = 0; turn < 100; ++turn) {
      short events = 0;
      const int fd = sink->PollFd(&events);
      if (fd < 0) break;
      pollfd p{fd, events, 0};
      const int ready = poll(&p, 1, 100);
      sink->Service(ready > 0 ? p.revents : 0, now);
    }
    ASSERT_FALSE(sink->available());
    const int delay = sink->TimeoutMs(now);
    EXPECT_GE(delay, static_cast<int>(base / 2)) << attempt;
    EXPECT_LE(delay, static_cast<int>(base * 3 / 2)) << attempt;
    if (base == 5000) capped_delays.insert(delay);
    base = std::min<uint64_t>(base * 2, 5000);
    now += static_cast<uint64_t>(delay);
  }
  EXPECT_GT(capped_delays.size(), 1u) << "jittered";
}

// M06: wrong credentials never make the sink available; the right ones do.
TEST(MqttSink, WrongPasswordNeverAvailableRightPasswordDelivers) {
  MosquittoBroker broker(MosquittoBrokerOptions{.username = "coapgate", .password = "s3cret", .tls = false});
  ASSERT_TRUE(broker.Start()) << broker.error();
  MqttSubscriber subscriber(broker.port(), "coapgate", "s3cret");
  ASSERT_TRUE(subscriber.WaitSubscribed(1)) << broker.Log();

  RecordingSettlement settlement;
  MqttSinkConfig config = Config(broker.port());
  config.username = "coapgate";
  config.password = "wrong";
  auto wrong = MakeSink(config, &settlement);
  ASSERT_TRUE(wrong);
  // Until the broker has refused two attempts (CONNACK reason 135, not authorised).
  ASSERT_TRUE(Drive(*wrong, [&] {
    return wrong->available() ||
           Occurrences(broker.Log(), "Sending CONNACK to 127.0.0.1 (0, 135)") >= 2;
  })) << broker.Log();
  EXPECT_FALSE(wrong->available());
  EXPECT_EQ(wrong->counters().connects.load(), 0u);
  EXPECT_FALSE(wrong->Publish(TestEvent().View(), 1));

  config.password = "s3cret";
  auto right = MakeSink(config, &settlement, 1);
  ASSERT_TRUE(right && Connect(*right)) << broker.Log();
  ASSERT_TRUE(right->Publish(TestEvent().View(), 2));
  ASSERT_TRUE(Drive(*right, [&] { return !settlement.settled.empty(); }));
  EXPECT_EQ(settlement.settled, (std::vector<std::pair<uint64_t, bool>>{{2, true}}));
  EXPECT_TRUE(subscriber.WaitFor(1));
}

TEST(MqttSink, TlsToATestCaDelivers) {
  MosquittoBroker broker(TlsOptions());
  ASSERT_TRUE(broker.Start()) << broker.error();
  MqttSubscriber subscriber(broker.port());  // on the plain listener
  ASSERT_TRUE(subscriber.WaitSubscribed(1));

  RecordingSettlement settlement;
  MqttSinkConfig config = Config(broker.tls_port());
  config.tls = true;
  config.ca_file = broker.ca_file();
  auto sink = MakeSink(config, &settlement);
  ASSERT_TRUE(sink && Connect(*sink)) << broker.Log();
  const TestEvent event(9);
  ASSERT_TRUE(sink->Publish(event.View(), 3));
  ASSERT_TRUE(Drive(*sink, [&] { return !settlement.settled.empty(); }));
  EXPECT_EQ(settlement.settled, (std::vector<std::pair<uint64_t, bool>>{{3, true}}));
  ASSERT_TRUE(subscriber.WaitFor(1));
  EXPECT_EQ(subscriber.messages()[0].payload, event.envelope);
}

// M06, TLS side: the system's CAs do not know the test CA, so the handshake fails every time.
TEST(MqttSink, TlsWithAnUntrustedServerNeverAvailable) {
  MosquittoBroker broker(TlsOptions());
  ASSERT_TRUE(broker.Start()) << broker.error();
  RecordingSettlement settlement;
  MqttSinkConfig config = Config(broker.tls_port());
  config.tls = true;  // ca_file empty: /etc/ssl/certs
  auto sink = MakeSink(config, &settlement);
  ASSERT_TRUE(sink);
  // Until the broker has seen two handshakes fail on the test CA's certificate.
  ASSERT_TRUE(Drive(*sink, [&] {
    return sink->available() || Occurrences(broker.Log(), "tlsv1 alert unknown ca") >= 2;
  })) << broker.Log();
  EXPECT_FALSE(sink->available());
  EXPECT_EQ(sink->counters().connects.load(), 0u);
}

TEST(MqttSink, CreateNamesTheBadSetting) {
  RecordingSettlement settlement;
  const auto error_of = [&](const MqttSinkConfig& config) -> std::string {
    auto sink = MqttSink::Create(config, 0, &settlement);
    return sink ? std::string("(created)") : sink.error();
  };
  MqttSinkConfig config = Config(1883);
  config.tls = true;
  config.ca_file = "/nonexistent/ca.pem";
  EXPECT_EQ(error_of(config), "ca_file: /nonexistent/ca.pem: No such file or directory");

  config.ca_file.clear();
  config.cert_file = "/nonexistent/client.crt";
  config.key_file = "/nonexistent/client.key";
  EXPECT_EQ(error_of(config).rfind("cert_file: /nonexistent/client.crt: ", 0), 0u)
      << error_of(config);

  // One bad setting each, on an otherwise good config: the error starts with its name.
  const std::pair<std::string_view, std::function<void(MqttSinkConfig&)>> kBad[] = {
      {"qos: ", [](MqttSinkConfig& c) { c.qos = 2; }},
      {"topic_template: ", [](MqttSinkConfig& c) { c.topic_template = "{iccid}/#"; }},
      {"error_topic: ", [](MqttSinkConfig& c) { c.error_topic = ""; }},
      {"format: ",
       [](MqttSinkConfig& c) {
         c.format = MqttFormat::kRaw;
         c.protocol = 4;
       }},
      {"max_inflight: ", [](MqttSinkConfig& c) { c.max_inflight = 0; }},
      {"ca_file: needs tls", [](MqttSinkConfig& c) { c.ca_file = "/etc/hostname"; }},
  };
  for (const auto& [prefix, adjust] : kBad) {
    SCOPED_TRACE(prefix);
    config = Config(1883);
    adjust(config);
    EXPECT_EQ(error_of(config).rfind(prefix, 0), 0u) << error_of(config);
  }
}

}  // namespace
}  // namespace coapgate::sinks
