#include "bootstrap/bootstrap_service.h"

#include "registry/psk_store.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "codec/code.h"
#include "codec/message.h"
#include "codec/option_iterator.h"
#include "codec/option_number.h"
#include "bootstrap/bootstrap_reply.h"

namespace coapgate::bootstrap {
namespace {

constexpr std::string_view kIccid = "8988280666000002864";
constexpr std::string_view kUrl = "coaps://ingest.example.net:5684";
constexpr int kReceiveTimeoutMs = 10'000;  // a bound against hangs, not a speed check

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_;
};

// A UDP socket bound to an ephemeral port of `loopback` (AF_INET or AF_INET6), or -1.
int BoundSocket(int family) {
  const int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_storage address{};
  socklen_t length;
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&address);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    length = sizeof(sockaddr_in);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&address);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    length = sizeof(sockaddr_in6);
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

sockaddr_storage LocalName(int fd, socklen_t* length) {
  sockaddr_storage address{};
  *length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), length);
  return address;
}

struct Received {
  std::vector<std::byte> bytes;
  sockaddr_storage from;
};

std::optional<Received> ReceiveOne(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, kReceiveTimeoutMs) != 1) return std::nullopt;
  Received r{std::vector<std::byte>(2048), {}};
  socklen_t from_length = sizeof(r.from);
  const ssize_t n = recvfrom(fd, r.bytes.data(), r.bytes.size(), 0,
                             reinterpret_cast<sockaddr*>(&r.from), &from_length);
  if (n < 0) return std::nullopt;
  r.bytes.resize(static_cast<size_t>(n));
  return r;
}

std::string Text(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

class BootstrapServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    path_ = testing::TempDir() + "bootstrap_service_" + info->name() + "_" +
            std::to_string(getpid()) + ".db";
    RemoveStateFiles();
    auto store = registry::PskStore::Open(path_, 300);
    ASSERT_TRUE(store) << store.error();
    store_ = std::move(*store);
  }
  void TearDown() override {
    store_.reset();
    RemoveStateFiles();
  }
  void RemoveStateFiles() const {
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path_ + suffix).c_str());
  }

  // Sockets on `family`'s loopback; false (test skipped) if that family is unavailable.
  bool OpenSockets(int family) {
    server_ = std::make_unique<Fd>(BoundSocket(family));
    client_ = std::make_unique<Fd>(BoundSocket(family));
    return server_->get() >= 0 && client_->get() >= 0;
  }

  // What a shard would fill in for a request from the client socket to the server socket.
  BootstrapRequest Request(bool confirmable, uint16_t mid, std::vector<std::byte> token,
                           std::string_view iccid, std::string_view user_psk = "") const {
    BootstrapRequest r{};
    r.socket_fd = server_->get();
    socklen_t length;
    const sockaddr_storage client = LocalName(client_->get(), &length);
    std::memcpy(&r.peer, &client, length);
    r.peer_length = length;
    socklen_t server_length;
    const sockaddr_storage server = LocalName(server_->get(), &server_length);
    r.local.family = server.ss_family;
    if (server.ss_family == AF_INET) {
      std::memcpy(r.local.address.data(),
                  &reinterpret_cast<const sockaddr_in*>(&server)->sin_addr, 4);
    } else {
      std::memcpy(r.local.address.data(),
                  &reinterpret_cast<const sockaddr_in6*>(&server)->sin6_addr, 16);
    }
    r.confirmable = confirmable;
    r.message_id = mid;
    r.token_length = static_cast<uint8_t>(token.size());
    std::copy(token.begin(), token.end(), r.token.begin());
    r.iccid_length = static_cast<uint8_t>(iccid.size());
    std::copy(iccid.begin(), iccid.end(), r.iccid.begin());
    r.user_psk_length = static_cast<uint8_t>(user_psk.size());
    std::copy(user_psk.begin(), user_psk.end(), r.user_psk.begin());
    return r;
  }

  // Receives one reply on the client and checks that it came from the server's address.
  std::optional<std::vector<std::byte>> ReceiveReply() const {
    auto r = ReceiveOne(client_->get());
    if (!r) {
      ADD_FAILURE() << "no reply within " << kReceiveTimeoutMs << " ms";
      return std::nullopt;
    }
    socklen_t length;
    const sockaddr_storage server = LocalName(server_->get(), &length);
    EXPECT_EQ(r->from.ss_family, server.ss_family);
    if (server.ss_family == AF_INET) {
      const auto& from = reinterpret_cast<const sockaddr_in&>(r->from);
      const auto& expected = reinterpret_cast<const sockaddr_in&>(server);
      EXPECT_EQ(from.sin_port, expected.sin_port);
      EXPECT_EQ(from.sin_addr.s_addr, expected.sin_addr.s_addr);
    } else {
      const auto& from = reinterpret_cast<const sockaddr_in6&>(r->from);
      const auto& expected = reinterpret_cast<const sockaddr_in6&>(server);
      EXPECT_EQ(from.sin6_port, expected.sin6_port);
      EXPECT_EQ(std::memcmp(&from.sin6_addr, &expected.sin6_addr, 16), 0);
    }
    return std::move(r->bytes);
  }

  std::string GeneratedKey(std::string_view iccid) const {
    std::string key;
    return store_->GeneratedKey(iccid, &key) ? key : "<none>";
  }

  std::string path_;
  std::unique_ptr<registry::PskStore> store_;
  std::unique_ptr<Fd> server_;
  std::unique_ptr<Fd> client_;
};

TEST_F(BootstrapServiceTest, NonRequestGets205WithTheStoredKey) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  BootstrapService service(store_.get(), std::string(kUrl), 16, [] { return uint64_t{1000}; });
  service.Start();
  ASSERT_TRUE(service.Submit(Request(false, 1001, {}, kIccid)));
  auto reply = ReceiveReply();
  ASSERT_TRUE(reply);
  auto m = codec::ParseMessage(*reply);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->type, codec::MessageType::kNonConfirmable);
  EXPECT_EQ(m->code, codec::code::kContent);
  EXPECT_TRUE(m->token.empty());
  EXPECT_TRUE(m->options.empty());
  // Persisted before the reply was sent: the key is in the store already.
  const std::string key = GeneratedKey(kIccid);
  ASSERT_EQ(key.size(), registry::kGeneratedPskLength);
  EXPECT_EQ(Text(m->payload), std::string(kIccid) + "," + key + "," + std::string(kUrl));
  EXPECT_NE(m->message_id >> 8, 0);
  EXPECT_NE(m->message_id & 0xff, 0);
  EXPECT_NE(m->message_id, 0x3839);
  service.Stop();
  EXPECT_EQ(service.replied_205(), 1u);
  EXPECT_EQ(service.replied_500(), 0u);
  EXPECT_EQ(service.send_failures(), 0u);
}

TEST_F(BootstrapServiceTest, ConRequestGetsAPiggybackedAckWithItsMidAndToken) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  BootstrapService service(store_.get(), std::string(kUrl), 16, [] { return uint64_t{1000}; });
  service.Start();
  const std::vector<std::byte> token = {std::byte{0xca}, std::byte{0xfe}, std::byte{0x01},
                                        std::byte{0x02}};
  ASSERT_TRUE(service.Submit(Request(true, 0x3839, token, kIccid)));
  auto reply = ReceiveReply();
  ASSERT_TRUE(reply);
  auto m = codec::ParseMessage(*reply);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->type, codec::MessageType::kAcknowledgement);
  EXPECT_EQ(m->code, codec::code::kContent);
  EXPECT_EQ(m->message_id, 0x3839);  // the device's MID, whatever its bytes
  EXPECT_TRUE(std::equal(m->token.begin(), m->token.end(), token.begin(), token.end()));
  EXPECT_TRUE(Text(m->payload).starts_with(std::string(kIccid) + ","));

  // A retransmission within the window gets the same key.
  const std::string key = GeneratedKey(kIccid);
  ASSERT_TRUE(service.Submit(Request(true, 0x3839, token, kIccid)));
  auto again = ReceiveReply();
  ASSERT_TRUE(again);
  auto m2 = codec::ParseMessage(*again);
  ASSERT_TRUE(m2);
  EXPECT_EQ(Text(m2->payload), std::string(kIccid) + "," + key + "," + std::string(kUrl));
  service.Stop();
  EXPECT_EQ(service.replied_205(), 2u);
}

TEST_F(BootstrapServiceTest, UserSetKeyIsSentAsIs) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  BootstrapService service(store_.get(), std::string(kUrl), 16, [] { return uint64_t{1000}; });
  service.Start();
  ASSERT_TRUE(service.Submit(Request(false, 7, {}, kIccid, "operator-key-42")));
  auto reply = ReceiveReply();
  ASSERT_TRUE(reply);
  auto m = codec::ParseMessage(*reply);
  ASSERT_TRUE(m);
  EXPECT_EQ(Text(m->payload), std::string(kIccid) + ",operator-key-42," + std::string(kUrl));
  EXPECT_EQ(GeneratedKey(kIccid), "<none>");
  service.Stop();
}

TEST_F(BootstrapServiceTest, ClockDecidesRegeneration) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  std::atomic<uint64_t> now{1000};
  BootstrapService service(store_.get(), std::string(kUrl), 16, [&] { return now.load(); });
  service.Start();
  std::vector<std::string> payloads;
  for (uint64_t t : {uint64_t{1000}, uint64_t{1299}, uint64_t{1599}}) {
    now = t;
    ASSERT_TRUE(service.Submit(Request(false, 1, {}, kIccid)));
    auto reply = ReceiveReply();
    ASSERT_TRUE(reply);
    auto m = codec::ParseMessage(*reply);
    ASSERT_TRUE(m);
    payloads.push_back(Text(m->payload));
  }
  EXPECT_EQ(payloads[0], payloads[1]);  // 299 s later
  EXPECT_NE(payloads[1], payloads[2]);  // 300 s after the previous call
  service.Stop();
}

TEST_F(BootstrapServiceTest, StoreFailureGets500WithAJsonBody) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  BootstrapService service(store_.get(), std::string(kUrl), 16, [] { return uint64_t{1000}; });
  service.Start();
  // Another file renamed over the state file: the key could not be kept, so none is given.
  const std::string stranger = path_ + ".stranger";
  { std::ofstream(stranger) << "not ours\n"; }
  ASSERT_EQ(std::rename(stranger.c_str(), path_.c_str()), 0);
  const std::vector<std::byte> token = {std::byte{0x11}};
  ASSERT_TRUE(service.Submit(Request(true, 0x2222, token, kIccid)));
  auto reply = ReceiveReply();
  ASSERT_TRUE(reply);
  auto m = codec::ParseMessage(*reply);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->type, codec::MessageType::kAcknowledgement);
  EXPECT_EQ(m->code, codec::code::kInternalServerError);
  EXPECT_EQ(m->message_id, 0x2222);
  std::optional<uint32_t> content_format;
  for (const codec::OptionView& o : codec::Options(*m)) {
    if (o.number == codec::option::kContentFormat) content_format = o.AsUint();
  }
  EXPECT_EQ(content_format, std::optional<uint32_t>(kContentFormatJson));
  const auto json = nlohmann::json::parse(Text(m->payload), nullptr, false);
  ASSERT_FALSE(json.is_discarded());
  EXPECT_EQ(json.value("statusText", ""), "Internal Server Error");
  EXPECT_EQ(GeneratedKey(kIccid), "<none>");  // nothing was handed out
  service.Stop();
  EXPECT_EQ(service.replied_500(), 1u);
  EXPECT_EQ(service.replied_205(), 0u);
}

TEST_F(BootstrapServiceTest, FullQueueRefusesAndCounts) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  BootstrapService service(store_.get(), std::string(kUrl), 2, [] { return uint64_t{1000}; });
  // Not started: nothing is taken off the queue.
  EXPECT_TRUE(service.Submit(Request(false, 1, {}, kIccid)));
  EXPECT_TRUE(service.Submit(Request(false, 2, {}, "8988280666000000002")));
  EXPECT_FALSE(service.Submit(Request(false, 3, {}, "8988280666000000003")));
  EXPECT_EQ(service.queue_full(), 1u);
  // Stop without Start answers the two queued requests on this thread.
  service.Stop();
  EXPECT_EQ(service.replied_205(), 2u);
  ASSERT_TRUE(ReceiveReply());
  ASSERT_TRUE(ReceiveReply());
  EXPECT_EQ(GeneratedKey("8988280666000000003"), "<none>");
}

TEST_F(BootstrapServiceTest, StopAnswersEverythingQueuedThenRefuses) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  BootstrapService service(store_.get(), std::string(kUrl), 64, [] { return uint64_t{1000}; });
  service.Start();
  constexpr int kRequests = 20;
  for (int i = 0; i < kRequests; ++i) {
    const std::string iccid = "89882806660000" + std::to_string(10000 + i);
    ASSERT_TRUE(service.Submit(Request(true, static_cast<uint16_t>(100 + i), {}, iccid)));
  }
  service.Stop();
  EXPECT_EQ(service.replied_205(), uint64_t{kRequests});
  std::set<uint16_t> mids;
  for (int i = 0; i < kRequests; ++i) {
    auto reply = ReceiveReply();
    ASSERT_TRUE(reply);
    auto m = codec::ParseMessage(*reply);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->code, codec::code::kContent);
    mids.insert(m->message_id);
  }
  EXPECT_EQ(mids.size(), size_t{kRequests});
  EXPECT_EQ(store_->size(), size_t{kRequests});

  EXPECT_FALSE(service.Submit(Request(false, 1, {}, kIccid)));
  EXPECT_EQ(service.refused_stopped(), 1u);
  service.Stop();  // idempotent
}

TEST_F(BootstrapServiceTest, ConcurrentSubmittersAreAllAnsweredOrCounted) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  BootstrapService service(store_.get(), std::string(kUrl), 8, [] { return uint64_t{1000}; });
  service.Start();
  constexpr int kThreads = 3;
  constexpr int kPerThread = 10;
  std::atomic<int> accepted{0};
  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string iccid = "8988280666000" + std::to_string(100000 + t * 100 + i);
        if (service.Submit(Request(false, 1, {}, iccid))) accepted.fetch_add(1);
      }
    });
  }
  for (auto& s : submitters) s.join();
  service.Stop();
  EXPECT_EQ(service.replied_205() + service.queue_full(), uint64_t{kThreads * kPerThread});
  EXPECT_EQ(service.replied_205(), static_cast<uint64_t>(accepted.load()));
  for (int i = 0; i < accepted.load(); ++i) ASSERT_TRUE(ReceiveReply());
}

TEST_F(BootstrapServiceTest, Ipv6ReplyLeavesFromTheRequestedAddress) {
  if (!OpenSockets(AF_INET6)) GTEST_SKIP() << "no IPv6 loopback here";
  BootstrapService service(store_.get(), std::string(kUrl), 16, [] { return uint64_t{1000}; });
  service.Start();
  ASSERT_TRUE(service.Submit(Request(false, 9, {std::byte{0x39}}, kIccid)));
  auto reply = ReceiveReply();
  ASSERT_TRUE(reply);
  auto m = codec::ParseMessage(*reply);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->code, codec::code::kContent);
  EXPECT_NE(m->message_id & 0xff, 0x38);  // the token starts with 0x39
  service.Stop();
  EXPECT_EQ(service.replied_205(), 1u);
}

// ---------------------------------------------------------------------------------------
// Backlog rules. The service is never started here: Stop answers the queue on this thread,
// in order, so what is batched with what is deterministic.

constexpr std::string_view kOtherIccid = "8988280666000002865";

std::optional<uint32_t> MaxAgeOf(const codec::MessageView& m) {
  std::optional<uint32_t> max_age;
  for (const codec::OptionView& o : codec::Options(m)) {
    if (o.number == codec::option::kMaxAge) max_age = o.AsUint();
  }
  return max_age;
}

TEST_F(BootstrapServiceTest, RequestOlderThanTheBudgetGets503WithMaxAgeNotAKey) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  std::atomic<uint64_t> now_ms{0};
  BootstrapService service(store_.get(), std::string(kUrl), 16,
                           BootstrapLimits{.response_budget_ms = 1500, .busy_max_age_s = 7},
                           [] { return uint64_t{1000}; }, [&] { return now_ms.load(); });
  ASSERT_TRUE(service.Submit(Request(true, 0x1111, {std::byte{0x42}}, kIccid)));  // at 0
  now_ms = 1000;
  ASSERT_TRUE(service.Submit(Request(true, 0x2222, {}, kOtherIccid)));  // at 1000
  now_ms = 1501;  // the first waited 1501 ms, the second 501 ms
  service.Stop();

  auto stale = ReceiveReply();
  ASSERT_TRUE(stale);
  auto m = codec::ParseMessage(*stale);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->type, codec::MessageType::kAcknowledgement);
  EXPECT_EQ(m->code, codec::code::kServiceUnavailable);
  EXPECT_EQ(m->message_id, 0x1111);
  ASSERT_EQ(m->token.size(), 1u);
  EXPECT_EQ(m->token[0], std::byte{0x42});
  EXPECT_EQ(MaxAgeOf(*m), std::optional<uint32_t>(7));
  EXPECT_EQ(Text(m->payload), "Service Unavailable");
  EXPECT_EQ(GeneratedKey(kIccid), "<none>");  // served late would have generated one

  auto fresh = ReceiveReply();
  ASSERT_TRUE(fresh);
  auto m2 = codec::ParseMessage(*fresh);
  ASSERT_TRUE(m2);
  EXPECT_EQ(m2->message_id, 0x2222);
  EXPECT_EQ(m2->code, codec::code::kContent);
  EXPECT_EQ(Text(m2->payload), std::string(kOtherIccid) + "," + GeneratedKey(kOtherIccid) + "," +
                                   std::string(kUrl));

  EXPECT_EQ(service.expired(), 1u);
  EXPECT_EQ(service.replied_503(), 1u);
  EXPECT_EQ(service.replied_205(), 1u);
  EXPECT_EQ(service.coalesced(), 0u);
}

// A shared store whose database is away (PostgresKeyStore): every call fails, unavailable().
class UnreachableStore final : public registry::KeyStore {
 public:
  Result<std::string, std::string> Bootstrap(std::string_view, std::string_view,
                                             uint64_t) override {
    ++calls;
    return Fail(std::string("postgres: cannot connect: the database is away"));
  }
  size_t GeneratedKey(std::string_view, std::span<std::byte>) const noexcept override {
    return 0;
  }
  std::optional<BootstrapState> StateOf(std::string_view) const override { return std::nullopt; }
  size_t size() const noexcept override { return 0; }
  const std::string& name() const noexcept override { return name_; }
  bool unavailable() const noexcept override { return true; }

  int calls = 0;

 private:
  std::string name_ = "unreachable";
};

TEST_F(BootstrapServiceTest, AStoreWhoseDatabaseIsAwayGets503WithMaxAgeForEveryCopy) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  UnreachableStore store;
  BootstrapService service(&store, std::string(kUrl), 16,
                           BootstrapLimits{.response_budget_ms = 0, .busy_max_age_s = 7},
                           [] { return uint64_t{1000}; }, [] { return uint64_t{0}; });
  ASSERT_TRUE(service.Submit(Request(true, 0x1111, {std::byte{0x42}}, kIccid)));
  ASSERT_TRUE(service.Submit(Request(true, 0x1112, {std::byte{0x43}}, kIccid)));
  service.Start();
  for (uint16_t mid : {0x1111, 0x1112}) {
    auto reply = ReceiveReply();
    ASSERT_TRUE(reply);
    auto m = codec::ParseMessage(*reply);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->message_id, mid);
    EXPECT_EQ(m->code, codec::code::kServiceUnavailable);
    EXPECT_EQ(MaxAgeOf(*m), std::optional<uint32_t>(7));
  }
  service.Stop();
  EXPECT_EQ(store.calls, 1) << "the copies are answered from one call";
  EXPECT_EQ(service.replied_503(), 2u);
  EXPECT_EQ(service.replied_500(), 0u);
}

TEST_F(BootstrapServiceTest, ZeroBudgetNeverExpires) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  std::atomic<uint64_t> now_ms{0};
  BootstrapService service(store_.get(), std::string(kUrl), 16, BootstrapLimits{},
                           [] { return uint64_t{1000}; }, [&] { return now_ms.load(); });
  ASSERT_TRUE(service.Submit(Request(false, 1, {}, kIccid)));
  now_ms = 3'600'000;
  service.Stop();
  auto reply = ReceiveReply();
  ASSERT_TRUE(reply);
  auto m = codec::ParseMessage(*reply);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->code, codec::code::kContent);
  EXPECT_EQ(service.expired(), 0u);
}

TEST_F(BootstrapServiceTest, QueuedCopiesOfOneDeviceAreAnsweredFromOneLookup) {
  ASSERT_TRUE(OpenSockets(AF_INET));
  BootstrapService service(store_.get(), std::string(kUrl), 16,
                           BootstrapLimits{.response_budget_ms = 1500},
                           [] { return uint64_t{1000}; }, [] { return uint64_t{0}; });
  // The device retries twice (new MIDs and tokens) while its first request waits; another
  // device's request sits between them.
  ASSERT_TRUE(service.Submit(Request(true, 0x0101, {std::byte{1}}, kIccid)));
  ASSERT_TRUE(service.Submit(Request(true, 0x0202, {std::byte{2}}, kOtherIccid)));
  ASSERT_TRUE(service.Submit(Request(true, 0x0303, {std::byte{3}}, kIccid)));
  ASSERT_TRUE(service.Submit(Request(false, 0x0404, {std::byte{4}}, kIccid)));
  service.Stop();

  // Every copy is answered, each with its own MID and token, all with the same key; the
  // device's copies first (taken with its oldest request), then the other device.
  const std::string expected = std::string(kIccid) + "," + GeneratedKey(kIccid) + "," +
                               std::string(kUrl);
  const std::pair<uint16_t, std::byte> mine[] = {{0x0101, std::byte{1}}, {0x0303, std::byte{3}}};
  for (const auto& [mid, token] : mine) {
    auto reply = ReceiveReply();
    ASSERT_TRUE(reply);
    auto m = codec::ParseMessage(*reply);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->type, codec::MessageType::kAcknowledgement);
    EXPECT_EQ(m->message_id, mid);
    ASSERT_EQ(m->token.size(), 1u);
    EXPECT_EQ(m->token[0], token);
    EXPECT_EQ(Text(m->payload), expected);
  }
  auto non = ReceiveReply();
  ASSERT_TRUE(non);
  auto n = codec::ParseMessage(*non);
  ASSERT_TRUE(n);
  EXPECT_EQ(n->type, codec::MessageType::kNonConfirmable);
  ASSERT_EQ(n->token.size(), 1u);
  EXPECT_EQ(n->token[0], std::byte{4});
  EXPECT_EQ(Text(n->payload), expected);
  auto other = ReceiveReply();
  ASSERT_TRUE(other);
  auto o = codec::ParseMessage(*other);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->message_id, 0x0202);
  EXPECT_TRUE(Text(o->payload).starts_with(std::string(kOtherIccid) + ","));

  EXPECT_EQ(service.replied_205(), 4u);
  EXPECT_EQ(service.coalesced(), 2u);
  EXPECT_EQ(service.expired(), 0u);
}

}  // namespace
}  // namespace coapgate::bootstrap
