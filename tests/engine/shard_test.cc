// A real Shard on its own thread, driven through its two seams: an in-memory DatagramIo (a
// queue of datagrams in, a record of datagrams out) and a fake clock. The registry and the
// Handoff are the real ones; the test thread plays the publisher worker (pops the outbound
// queue, completes slots). Every wait is bounded and fails the test when it runs out.
#include "engine/shard.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "codec/message.h"
#include "codec/option_iterator.h"
#include "codec/code.h"
#include "codec/option_number.h"
#include "registry/device_registry.h"

namespace coapgate::engine {
namespace {

using Bytes = std::vector<std::byte>;
constexpr auto kWait = std::chrono::seconds(10);  // generous: sanitizer builds are slow
using codec::code::kBadRequest;
using codec::code::kChanged;
using codec::code::kServiceUnavailable;
using codec::code::kUnauthorized;
constexpr uint32_t kBudgetMs = 1500;
constexpr uint32_t kBusyMaxAgeS = 5;

sockaddr_in Address(const std::string& ip, uint16_t port = 40000) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  EXPECT_EQ(inet_pton(AF_INET, ip.c_str(), &a.sin_addr), 1) << ip;
  return a;
}

// What the fake carries both ways, shared by the test and the shard's FakeIo.
struct Wire {
  struct Datagram {
    sockaddr_in peer;
    Bytes bytes;
  };
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<Datagram> inbound;   // guarded by mutex
  std::vector<Datagram> outbound;  // guarded by mutex
  int event_fd = eventfd(0, EFD_NONBLOCK);

  ~Wire() { close(event_fd); }
  // Wakes the shard's Receive (after a datagram, or after the fake clock moved).
  void Nudge() {
    const uint64_t one = 1;
    EXPECT_EQ(write(event_fd, &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
  }
  void Push(const std::string& ip, Bytes bytes, uint16_t port = 40000) {
    {
      std::lock_guard lock(mutex);
      inbound.push_back({Address(ip, port), std::move(bytes)});
    }
    Nudge();
  }
  // Waits until `n` datagrams went out in total; returns them all (in send order).
  std::vector<Datagram> WaitOutbound(size_t n) {
    std::unique_lock lock(mutex);
    const bool ok = changed.wait_for(lock, kWait, [&] { return outbound.size() >= n; });
    EXPECT_TRUE(ok) << "waited for " << n << " replies, got " << outbound.size();
    return outbound;
  }
  size_t outbound_count() {
    std::lock_guard lock(mutex);
    return outbound.size();
  }
};

class FakeIo final : public net::DatagramIo {
 public:
  FakeIo(Wire* wire, std::vector<int> wake_fds) : wire_(wire), wake_fds_(std::move(wake_fds)) {}

  std::span<const net::ReceivedDatagram> Receive(int timeout_ms) noexcept override {
    std::vector<pollfd> fds{{wire_->event_fd, POLLIN, 0}};
    for (int fd : wake_fds_) fds.push_back({fd, POLLIN, 0});
    {
      std::lock_guard lock(wire_->mutex);
      if (receiving_ && !wire_->inbound.empty()) timeout_ms = 0;
    }
    (void)poll(fds.data(), fds.size(), timeout_ms);
    uint64_t value;
    (void)read(wire_->event_fd, &value, sizeof(value));
    batch_.clear();
    received_.clear();
    std::lock_guard lock(wire_->mutex);
    // Not receiving: what is inbound stays queued, as in a socket's kernel queue.
    while (receiving_ && !wire_->inbound.empty() && batch_.size() < kBatch) {
      batch_.push_back(std::move(wire_->inbound.front()));
      wire_->inbound.pop_front();
    }
    for (const Wire::Datagram& d : batch_) {  // batch_ no longer grows: pointers stay valid
      received_.push_back({d.bytes, reinterpret_cast<const sockaddr*>(&d.peer),
                           sizeof(d.peer), 0, false, {}});
    }
    return received_;
  }
  void Send(uint16_t, const sockaddr* peer, socklen_t peer_length, const net::LocalAddress&,
            std::span<const std::byte> bytes) noexcept override {
    Wire::Datagram d{};
    std::memcpy(&d.peer, peer, std::min<size_t>(peer_length, sizeof(d.peer)));
    d.bytes.assign(bytes.begin(), bytes.end());
    std::lock_guard lock(wire_->mutex);
    wire_->outbound.push_back(std::move(d));
    wire_->changed.notify_all();
  }
  void Flush() noexcept override {}
  void SetReceiving(bool on) noexcept override { receiving_ = on; }
  bool receive_stopped() const noexcept override { return !receiving_; }
  uint64_t send_failures() const noexcept override { return 0; }
  const char* name() const noexcept override { return "fake"; }

 private:
  static constexpr size_t kBatch = 32;
  bool receiving_ = true;
  Wire* wire_;
  std::vector<int> wake_fds_;
  std::vector<Wire::Datagram> batch_;
  std::vector<net::ReceivedDatagram> received_;
};

class FakeClock final : public Clock {
 public:
  uint64_t MonotonicMs() const noexcept override { return now_ms_.load(); }
  uint64_t WallMs() const noexcept override { return 1'700'000'000'000 + now_ms_.load(); }
  void Advance(uint64_t ms) { now_ms_ += ms; }

 private:
  std::atomic<uint64_t> now_ms_{1'000'000};  // well past 0: now_s starts at 1000
};

// A CoAP POST with an optional `t` topic (Uri-Query), as a device sends it.
Bytes Post(uint16_t mid, std::vector<uint8_t> token, const std::string& topic = "temp",
           bool confirmable = true) {
  Bytes out;
  out.push_back(std::byte(0x40 | (confirmable ? 0 : 0x10) | token.size()));
  out.push_back(std::byte{0x02});
  out.push_back(std::byte(mid >> 8));
  out.push_back(std::byte(mid & 0xff));
  for (uint8_t b : token) out.push_back(std::byte{b});
  if (!topic.empty()) {
    const std::string query = "t=" + topic;
    EXPECT_LT(query.size(), 13u);
    out.push_back(std::byte(13 << 4 | query.size()));  // Uri-Query (15 = 13 + 2), first
    out.push_back(std::byte{15 - 13});
    for (char c : query) out.push_back(std::byte(c));
  }
  out.push_back(std::byte{0xff});
  for (char c : std::string("payload")) out.push_back(std::byte(c));
  return out;
}

struct Reply {
  codec::MessageType type;
  uint8_t code;
  uint16_t message_id;
  Bytes token;
  std::optional<uint32_t> max_age;
};

Reply ParseReply(const Bytes& bytes) {
  auto m = codec::ParseMessage(bytes);
  EXPECT_TRUE(m.has_value());
  if (!m) return {};
  Reply r{m->type, m->code, m->message_id, Bytes(m->token.begin(), m->token.end()), {}};
  for (const codec::OptionView& o : codec::Options(*m)) {
    if (o.number != codec::option::kMaxAge) continue;
    uint32_t v = 0;
    for (std::byte b : o.value) v = v << 8 | static_cast<uint8_t>(b);
    r.max_age = v;
  }
  return r;
}

Bytes TokenBytes(std::vector<uint8_t> t) {
  Bytes out;
  for (uint8_t b : t) out.push_back(std::byte{b});
  return out;
}

// Registered, active: 10.0.0.1 .. 10.0.0.20; 10.0.0.99 inactive; everything else unknown.
std::string RegistryCsv() {
  std::string csv = "iccid,imsi,ip,status,psk,psk_format\n";
  for (int i = 1; i <= 20; ++i) {
    char line[128];
    std::snprintf(line, sizeof(line), "89882806660000001%03d,901405100000%03d,10.0.0.%d,active,,\n",
                  i, i, i);
    csv += line;
  }
  csv += "8988280666000000199,901405100000199,10.0.0.99,inactive,,\n";
  return csv;
}

class ShardTest : public ::testing::Test {
 protected:
  void StartShard(uint32_t dedup_devices = 64, uint32_t per_device = 4) {
    auto registry = registry::DeviceRegistry::ParseCsv(RegistryCsv(), "test.csv");
    ASSERT_TRUE(registry.has_value()) << registry.error();
    holder_ = std::make_unique<registry::RegistryHolder>(*registry);
    publisher_fd_ = eventfd(0, EFD_NONBLOCK);
    ShardOptions o;
    o.io_factory = [this](const net::DatagramIoOptions& io)
        -> Result<std::unique_ptr<net::DatagramIo>, std::string> {
      return std::unique_ptr<net::DatagramIo>(new FakeIo(&wire_, io.wake_fds));
    };
    o.clock = &clock_;
    o.dedup_devices = dedup_devices;
    o.dedup_per_device = per_device;
    o.inflight_capacity = 64;
    o.response_budget_ms = kBudgetMs;
    o.busy_max_age_s = kBusyMaxAgeS;
    o.registry = holder_.get();
    o.publisher_wake_fds = {publisher_fd_};
    auto shard = Shard::Create(std::move(o));
    ASSERT_TRUE(shard.has_value()) << shard.error();
    shard_ = std::move(*shard);
    shard_->Start();
  }
  void TearDown() override {
    shard_.reset();
    if (publisher_fd_ >= 0) close(publisher_fd_);
  }

  // The publisher's side: the next slot the shard handed over, waiting up to kWait.
  std::optional<uint32_t> PopPublished() {
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    uint32_t slot;
    while (!shard_->handoff().PopOutbound(0, &slot)) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        ADD_FAILURE() << "nothing was published";
        return std::nullopt;
      }
      pollfd p{publisher_fd_, POLLIN, 0};
      (void)poll(&p, 1, static_cast<int>(left.count()));
      uint64_t value;
      (void)read(publisher_fd_, &value, sizeof(value));
    }
    return slot;
  }
  void Complete(uint32_t slot, sinks::Outcome outcome = sinks::Outcome::kAccepted) {
    shard_->handoff().Complete(0, slot, outcome);
    shard_->handoff().WakeShard();
  }
  // Sends and waits for the one reply it causes.
  Wire::Datagram RoundTrip(const std::string& ip, const Bytes& request) {
    const size_t before = wire_.outbound_count();
    wire_.Push(ip, request);
    auto out = wire_.WaitOutbound(before + 1);
    return out.size() > before ? out[before] : Wire::Datagram{};
  }
  // Publishes and completes one request of `ip`; returns its reply.
  Bytes Forward(const std::string& ip, const Bytes& request) {
    const size_t before = wire_.outbound_count();
    wire_.Push(ip, request);
    const auto slot = PopPublished();
    if (!slot) return {};
    Complete(*slot);
    auto out = wire_.WaitOutbound(before + 1);
    return out.size() > before ? out[before].bytes : Bytes{};
  }
  // Waits (bounded) until the shard's counter reaches `value`.
  void WaitCounter(Counter c, uint64_t value) {
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    while (shard_->counters().Get(c) < value && std::chrono::steady_clock::now() < deadline) {
      std::unique_lock lock(wire_.mutex);
      wire_.changed.wait_for(lock, std::chrono::milliseconds(5));
    }
    EXPECT_EQ(shard_->counters().Get(c), value) << ToString(c);
  }
  // A marker request from another registered device: once it is published, every datagram
  // sent before it was handled (the shard takes them in order).
  void Barrier(uint16_t mid) {
    wire_.Push("10.0.0.20", Post(mid, {0xba}));
    const auto slot = PopPublished();
    ASSERT_TRUE(slot.has_value());
    barrier_slots_.push_back(*slot);
  }

  Wire wire_;
  FakeClock clock_;
  std::unique_ptr<registry::RegistryHolder> holder_;
  int publisher_fd_ = -1;
  std::unique_ptr<Shard> shard_;
  std::vector<uint32_t> barrier_slots_;
};

TEST_F(ShardTest, RequestIsPublishedAndAnswered204WhenThePublisherCompletes) {
  StartShard();
  wire_.Push("10.0.0.1", Post(0x1234, {1, 2, 3, 4}));
  const auto slot = PopPublished();
  ASSERT_TRUE(slot.has_value());
  const sinks::InflightMessage& m = shard_->handoff().published(*slot);
  EXPECT_EQ(m.Iccid(), "89882806660000001001");
  EXPECT_EQ(m.Topic(), "temp");
  EXPECT_EQ(m.message_id, 0x1234);
  EXPECT_EQ(wire_.outbound_count(), 0u);  // nothing before the completion
  Complete(*slot);
  const auto out = wire_.WaitOutbound(1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].peer.sin_addr.s_addr, Address("10.0.0.1").sin_addr.s_addr);
  const Reply r = ParseReply(out[0].bytes);
  EXPECT_EQ(r.type, codec::MessageType::kAcknowledgement);
  EXPECT_EQ(r.code, kChanged);
  EXPECT_EQ(r.message_id, 0x1234);
  EXPECT_EQ(r.token, TokenBytes({1, 2, 3, 4}));
  EXPECT_FALSE(r.max_age.has_value());
  WaitCounter(Counter::kReplyChanged, 1);
  EXPECT_EQ(shard_->counters().Get(Counter::kAccepted), 1u);
}

// One observation per reply: a refusal answered in the turn that received it, and a 2.04
// that waited for the sink, measured on the fake clock from receipt to the completion's turn.
TEST_F(ShardTest, RequestDurationsHaveOneObservationPerReplyOnTheInjectedClock) {
  StartShard();
  EXPECT_EQ(ParseReply(RoundTrip("192.0.2.7", Post(7, {9})).bytes).code, kUnauthorized);
  wire_.Push("10.0.0.1", Post(0x1234, {1}));
  const auto slot = PopPublished();
  ASSERT_TRUE(slot.has_value());
  clock_.Advance(7);  // the sink takes 7 ms
  Complete(*slot);
  ASSERT_EQ(wire_.WaitOutbound(2).size(), 2u);
  WaitCounter(Counter::kReplyChanged, 1);
  // The refusal is recorded at the end of its turn (before the real backends' Flush; the fake
  // sends at once): wait for it, bounded.
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (shard_->request_durations().Read().count() < 2 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const DurationHistogram::Snapshot s = shard_->request_durations().Read();
  EXPECT_EQ(s.count(), 2u);
  EXPECT_EQ(s.counts[0], 1u);  // the 4.01: no fake time passed within its turn
  EXPECT_EQ(s.counts[DurationHistogram::BucketOf(7000)], 1u);
  EXPECT_EQ(s.sum_us, 7000u);
}

TEST_F(ShardTest, UnknownAndInactiveDevicesGet401AndNothingIsPublished) {
  StartShard();
  for (const char* ip : {"192.0.2.7", "10.0.0.99"}) {
    const Reply r = ParseReply(RoundTrip(ip, Post(7, {9})).bytes);
    EXPECT_EQ(r.code, kUnauthorized) << ip;
    EXPECT_EQ(r.message_id, 7);
    EXPECT_EQ(r.token, TokenBytes({9}));
  }
  Barrier(1);
  EXPECT_EQ(shard_->counters().Get(Counter::kAccepted), 1u);  // the barrier only
  EXPECT_EQ(shard_->counters().Get(Counter::kReplyUnauthorized), 2u);
}

TEST_F(ShardTest, BadTopicGets400AndNothingIsPublished) {
  StartShard();
  const Reply r = ParseReply(RoundTrip("10.0.0.1", Post(8, {1}, "a//b")).bytes);
  EXPECT_EQ(r.code, kBadRequest);
  EXPECT_EQ(r.type, codec::MessageType::kAcknowledgement);
  Barrier(1);
  EXPECT_EQ(shard_->counters().Get(Counter::kAccepted), 1u);
}

TEST_F(ShardTest, RetransmissionGetsTheIdenticalBytesAndIsNotPublishedAgain) {
  StartShard();
  const Bytes request = Post(0x0101, {0xaa, 0xbb});
  const Bytes first = Forward("10.0.0.1", request);
  ASSERT_FALSE(first.empty());
  // From another source port (a NAT rebinding): the device is its address.
  const size_t before = wire_.outbound_count();
  wire_.Push("10.0.0.1", request, 40001);
  const auto out = wire_.WaitOutbound(before + 1);
  ASSERT_EQ(out.size(), before + 1);
  EXPECT_EQ(out[before].bytes, first);
  Barrier(1);
  EXPECT_EQ(shard_->counters().Get(Counter::kAccepted), 2u);  // the request and the barrier
  EXPECT_EQ(shard_->counters().Get(Counter::kDuplicateReplayed), 1u);
}

TEST_F(ShardTest, DuplicateOfAPendingRequestIsNotAnswered) {
  StartShard();
  const Bytes request = Post(0x0202, {0x01});
  wire_.Push("10.0.0.1", request);
  const auto slot = PopPublished();
  ASSERT_TRUE(slot.has_value());
  wire_.Push("10.0.0.1", request);
  Barrier(2);  // the duplicate was handled
  EXPECT_EQ(wire_.outbound_count(), 0u);
  EXPECT_EQ(shard_->counters().Get(Counter::kDropPendingDuplicate), 1u);
  Complete(*slot);
  const auto out = wire_.WaitOutbound(1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ParseReply(out[0].bytes).code, kChanged);
}

TEST_F(ShardTest, BudgetExpiryAnswers503WithMaxAgeAndTheLateCompletionIsSilent) {
  StartShard();
  const Bytes request = Post(0x0303, {0x03});
  wire_.Push("10.0.0.1", request);
  const auto slot = PopPublished();
  ASSERT_TRUE(slot.has_value());
  EXPECT_EQ(wire_.outbound_count(), 0u);
  clock_.Advance(kBudgetMs);
  wire_.Nudge();
  const auto out = wire_.WaitOutbound(1);
  ASSERT_EQ(out.size(), 1u);
  const Reply r = ParseReply(out[0].bytes);
  EXPECT_EQ(r.code, kServiceUnavailable);
  EXPECT_EQ(r.message_id, 0x0303);
  ASSERT_TRUE(r.max_age.has_value());
  EXPECT_GE(*r.max_age, kBusyMaxAgeS);
  EXPECT_LE(*r.max_age, 2 * kBusyMaxAgeS);
  WaitCounter(Counter::kBudgetExpired, 1);
  // The publisher finishes late: the device already has its answer.
  Complete(*slot);
  // A retransmission gets the same 5.03, Max-Age included.
  const size_t before = wire_.outbound_count();
  wire_.Push("10.0.0.1", request);
  const auto again = wire_.WaitOutbound(before + 1);
  ASSERT_EQ(again.size(), before + 1);
  EXPECT_EQ(again[before].bytes, out[0].bytes);
  Barrier(1);
  EXPECT_EQ(shard_->counters().Get(Counter::kReplyChanged), 0u);
}

TEST_F(ShardTest, DrainingAnswers503) {
  StartShard();
  shard_->RequestDrain();
  const Reply r = ParseReply(RoundTrip("10.0.0.1", Post(0x0404, {4})).bytes);
  EXPECT_EQ(r.code, kServiceUnavailable);
  EXPECT_TRUE(r.max_age.has_value());
  WaitCounter(Counter::kDraining, 1);
  EXPECT_EQ(shard_->counters().Get(Counter::kAccepted), 0u);
}

// The take-over's pause (engine/takeover_channel.h): a pending request still completes and is
// answered while the shard no longer receives; what arrives meanwhile stays queued (for the
// successor) and is handled only once receiving resumes (a hand-over that failed).
TEST_F(ShardTest, StoppedReceivingStillAnswersPendingAndLeavesNewDatagramsQueued) {
  StartShard();
  wire_.Push("10.0.0.1", Post(0x0505, {5}));
  const auto slot = PopPublished();
  ASSERT_TRUE(slot.has_value());
  shard_->RequestReceiving(false);
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (!shard_->receive_stopped() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(shard_->receive_stopped());
  EXPECT_EQ(shard_->pending(), 1u);
  wire_.Push("10.0.0.2", Post(0x0606, {6}));
  Complete(*slot);
  const auto out = wire_.WaitOutbound(1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ParseReply(out[0].bytes).message_id, 0x0505);
  WaitCounter(Counter::kReplyChanged, 1);
  {
    std::lock_guard lock(wire_.mutex);
    EXPECT_EQ(wire_.inbound.size(), 1u);  // not taken
  }
  EXPECT_EQ(shard_->counters().Get(Counter::kReceived), 1u);
  shard_->RequestReceiving(true);
  const auto again = PopPublished();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(shard_->handoff().published(*again).message_id, 0x0606);
  EXPECT_FALSE(shard_->receive_stopped());
  Complete(*again);
  EXPECT_EQ(wire_.WaitOutbound(2).size(), 2u);
}

TEST_F(ShardTest, OutOfOrderCompletionsAnswerEachRequestItsOwnWay) {
  StartShard();
  const std::string ips[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
  uint32_t slots[3];
  for (int i = 0; i < 3; ++i) {
    wire_.Push(ips[i], Post(static_cast<uint16_t>(0x500 + i), {static_cast<uint8_t>(i)}));
    const auto slot = PopPublished();
    ASSERT_TRUE(slot.has_value());
    slots[i] = *slot;
  }
  Complete(slots[2]);
  Complete(slots[0], sinks::Outcome::kUnavailable);
  Complete(slots[1], sinks::Outcome::kBadPayload);
  const auto out = wire_.WaitOutbound(3);
  ASSERT_EQ(out.size(), 3u);
  const uint8_t expected[] = {kServiceUnavailable, kBadRequest, kChanged};
  for (const Wire::Datagram& d : out) {
    const Reply r = ParseReply(d.bytes);
    int i = 0;
    while (i < 3 && d.peer.sin_addr.s_addr != Address(ips[i]).sin_addr.s_addr) ++i;
    ASSERT_LT(i, 3);
    EXPECT_EQ(r.message_id, 0x500 + i);
    EXPECT_EQ(r.token, TokenBytes({static_cast<uint8_t>(i)}));
    EXPECT_EQ(r.code, expected[i]) << ips[i];
    EXPECT_EQ(r.max_age.has_value(), expected[i] == kServiceUnavailable);
  }
  WaitCounter(Counter::kSinkRefused, 1);
}

TEST_F(ShardTest, FloodOfOtherDevicesDoesNotEvictADevicesExchanges) {
  StartShard(/*dedup_devices=*/20, /*per_device=*/4);
  const Bytes request = Post(0x0601, {6});
  const Bytes first = Forward("10.0.0.1", request);
  // Unregistered addresses get 4.01 and take no record; registered ones stay within K.
  for (int i = 0; i < 500; ++i) {
    wire_.Push("192.0.2." + std::to_string(i % 250 + 1), Post(static_cast<uint16_t>(i), {1}));
  }
  wire_.WaitOutbound(1 + 500);
  for (int d = 2; d <= 19; ++d) {
    for (uint16_t mid = 0; mid < 4; ++mid) {
      Forward("10.0.0." + std::to_string(d), Post(mid, {2}));
    }
  }
  const size_t before = wire_.outbound_count();
  wire_.Push("10.0.0.1", request);
  const auto out = wire_.WaitOutbound(before + 1);
  ASSERT_EQ(out.size(), before + 1);
  EXPECT_EQ(out[before].bytes, first);
  Barrier(1);
  EXPECT_EQ(shard_->counters().Get(Counter::kAccepted), 1u + 18 * 4 + 1);
  EXPECT_EQ(shard_->counters().Get(Counter::kDuplicateReplayed), 1u);
  WaitCounter(Counter::kDedupEvictedTableBound, 0);
  WaitCounter(Counter::kDedupEvictedDeviceOverK, 0);
}

TEST_F(ShardTest, DeviceOverKEvictsItsOwnOldestExchange) {
  StartShard(/*dedup_devices=*/20, /*per_device=*/2);
  const Bytes oldest = Post(0x0700, {7});
  Forward("10.0.0.1", oldest);
  Forward("10.0.0.1", Post(0x0701, {7}));
  const Bytes latest = Post(0x0702, {7});
  const Bytes latest_reply = Forward("10.0.0.1", latest);  // K = 2: 0x0700 goes
  WaitCounter(Counter::kDedupEvictedDeviceOverK, 1);
  // The latest is still remembered...
  const size_t before = wire_.outbound_count();
  wire_.Push("10.0.0.1", latest);
  const auto out = wire_.WaitOutbound(before + 1);
  ASSERT_EQ(out.size(), before + 1);
  EXPECT_EQ(out[before].bytes, latest_reply);
  // ...the oldest is new again: forwarded a second time.
  EXPECT_FALSE(Forward("10.0.0.1", oldest).empty());
  EXPECT_EQ(shard_->counters().Get(Counter::kAccepted), 4u);
  EXPECT_EQ(shard_->counters().Get(Counter::kDedupEvictedTableBound), 0u);
}

TEST(ShardCreate, FailsWithoutAnIoFactoryAndReportsTheFactorysError) {
  auto registry = registry::DeviceRegistry::ParseCsv(RegistryCsv(), "test.csv");
  ASSERT_TRUE(registry.has_value());
  registry::RegistryHolder holder(*registry);
  const int wake = eventfd(0, EFD_NONBLOCK);
  ShardOptions o;
  o.registry = &holder;
  o.publisher_wake_fds = {wake};
  auto none = Shard::Create(o);
  ASSERT_FALSE(none.has_value());
  o.io_factory = [](const net::DatagramIoOptions&)
      -> Result<std::unique_ptr<net::DatagramIo>, std::string> {
    return Fail(std::string("no ring here"));
  };
  auto failed = Shard::Create(o);
  ASSERT_FALSE(failed.has_value());
  EXPECT_EQ(failed.error(), "no ring here");
  close(wake);
}

// The device's activity word (registry/device_activity.h, read by GET /devices): the shard
// records each answer and why on the device's registry record.
TEST_F(ShardTest, ActivityWordsRecordEachAnswerAndItsReason) {
  StartShard();
  const auto activity = [this](std::string_view iccid) {
    const auto registry = holder_->current();
    return registry->LoadRequestActivity(registry->FindByIccid(iccid)->index);
  };
  const uint32_t now_s = static_cast<uint32_t>(clock_.WallMs() / 1000);
  EXPECT_EQ(activity("89882806660000001001"), registry::RequestActivity{});

  ASSERT_EQ(ParseReply(Forward("10.0.0.1", Post(0x0501, {1}))).code, kChanged);
  EXPECT_EQ(activity("89882806660000001001"),
            (registry::RequestActivity{now_s, kChanged, registry::Reason::kNone, false}));

  ASSERT_EQ(ParseReply(RoundTrip("10.0.0.99", Post(0x0502, {2})).bytes).code, kUnauthorized);
  ASSERT_EQ(ParseReply(RoundTrip("10.0.0.2", Post(0x0503, {3}, "a//b")).bytes).code,
            kBadRequest);
  wire_.Push("10.0.0.3", Post(0x0504, {4}));
  ASSERT_TRUE(PopPublished().has_value());
  clock_.Advance(kBudgetMs);
  wire_.Nudge();
  ASSERT_EQ(wire_.WaitOutbound(4).size(), 4u);
  Barrier(1);  // every store above is done
  EXPECT_EQ(activity("8988280666000000199"),
            (registry::RequestActivity{now_s, kUnauthorized, registry::Reason::kInactive, false}));
  EXPECT_EQ(activity("89882806660000001002"),
            (registry::RequestActivity{now_s, kBadRequest, registry::Reason::kBadTopic, false}));
  const uint32_t later_s = static_cast<uint32_t>(clock_.WallMs() / 1000);
  EXPECT_EQ(activity("89882806660000001003"),
            (registry::RequestActivity{later_s, kServiceUnavailable,
                                       registry::Reason::kSinkTimeout, false}));
}

}  // namespace
}  // namespace coapgate::engine
