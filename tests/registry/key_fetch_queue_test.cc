// KeyFetchQueue: what reaches the database thread when handshakes miss keys — each ICCID once
// per cooldown, at most kCapacity pending, every refusal counted, the wake fd readable exactly
// while something is pending.
#include "registry/key_fetch_queue.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace coapgate::registry {
namespace {

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

std::string Iccid(size_t i) {
  std::string s = "89882806660" + std::to_string(10000000 + i);
  return s;
}

TEST(KeyFetchQueueTest, PostsOnceUntilTheCooldownPasses) {
  KeyFetchQueue q(1000);
  EXPECT_FALSE(Readable(q.wake_fd()));
  q.Post(Iccid(1), 5000);
  EXPECT_TRUE(Readable(q.wake_fd()));
  q.Post(Iccid(1), 5500);  // pending and within the cooldown
  std::vector<std::string> got;
  q.Take(&got);
  EXPECT_EQ(got, std::vector<std::string>{Iccid(1)});
  EXPECT_FALSE(Readable(q.wake_fd()));
  q.Post(Iccid(1), 5999);  // fetched, still within the cooldown
  q.Take(&got);
  EXPECT_TRUE(got.empty());
  q.Post(Iccid(1), 6000);
  q.Take(&got);
  EXPECT_EQ(got, std::vector<std::string>{Iccid(1)});
  EXPECT_EQ(q.queued(), 2u);
  EXPECT_EQ(q.suppressed(), 2u);
  EXPECT_EQ(q.queue_full(), 0u);
}

TEST(KeyFetchQueueTest, BoundsThePendingSetAndCountsTheDrops) {
  KeyFetchQueue q(1000);
  for (size_t i = 0; i < KeyFetchQueue::kCapacity + 3; ++i) q.Post(Iccid(i), 1);
  EXPECT_EQ(q.queued(), KeyFetchQueue::kCapacity);
  EXPECT_EQ(q.queue_full(), 3u);
  std::vector<std::string> got;
  q.Take(&got);
  ASSERT_EQ(got.size(), KeyFetchQueue::kCapacity);
  EXPECT_EQ(got.front(), Iccid(0));
  EXPECT_EQ(got.back(), Iccid(KeyFetchQueue::kCapacity - 1));
  // A dropped ICCID is not asked for again before its cooldown either.
  q.Post(Iccid(KeyFetchQueue::kCapacity), 2);
  EXPECT_EQ(q.suppressed(), 1u);
  q.Post(Iccid(KeyFetchQueue::kCapacity), 1001);
  q.Take(&got);
  EXPECT_EQ(got, std::vector<std::string>{Iccid(KeyFetchQueue::kCapacity)});
}

TEST(KeyFetchQueueTest, IgnoresWhatNoRegistryDeviceCouldBe) {
  KeyFetchQueue q(1000);
  q.Post("", 1);
  q.Post(std::string(kMaxIccidLength + 1, '8'), 1);
  q.Post(std::string(kMaxIccidLength, '8'), 1);
  std::vector<std::string> got;
  q.Take(&got);
  EXPECT_EQ(got, std::vector<std::string>{std::string(kMaxIccidLength, '8')});
}

TEST(KeyFetchQueueTest, ManyPostersLoseNoWakeUp) {
  KeyFetchQueue q(1000000);
  constexpr size_t kThreads = 4, kEach = 500;
  std::vector<std::thread> posters;
  for (size_t t = 0; t < kThreads; ++t) {
    posters.emplace_back([&q, t] {
      for (size_t i = 0; i < kEach; ++i) q.Post(Iccid(t * kEach + i), 1);
    });
  }
  // The consumer takes while the posters run (each Take may race a Post).
  std::vector<std::string> got, all;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (q.queued() + q.queue_full() < kThreads * kEach &&
         std::chrono::steady_clock::now() < deadline) {
    pollfd p{q.wake_fd(), POLLIN, 0};
    if (::poll(&p, 1, 10) == 1) {
      q.Take(&got);
      all.insert(all.end(), got.begin(), got.end());
    }
  }
  for (auto& poster : posters) poster.join();
  // Whatever is still pending was announced: the fd is readable, or nothing is left.
  if (Readable(q.wake_fd())) {
    q.Take(&got);
    all.insert(all.end(), got.begin(), got.end());
  }
  q.Take(&got);
  EXPECT_TRUE(got.empty()) << "pending without a wake-up";
  EXPECT_EQ(all.size(), q.queued());
}

}  // namespace
}  // namespace coapgate::registry
