#include "engine/inflight_table.h"

#include <gtest/gtest.h>

#include <vector>

namespace coapgate::engine {
namespace {

std::vector<uint32_t> Unanswered(const InflightTable& t) {
  std::vector<uint32_t> out;
  for (uint32_t s = t.oldest_unanswered(); s != InflightTable::kNoSlot; s = t[s].next) {
    out.push_back(s);
  }
  return out;
}

TEST(InflightTable, EmptyHasNoDeadline) {
  InflightTable t(4);
  EXPECT_EQ(t.capacity(), 4u);
  EXPECT_EQ(t.oldest_unanswered(), InflightTable::kNoSlot);
  EXPECT_EQ(t.next_deadline_ms(), UINT64_MAX);
}

TEST(InflightTable, KeepsArrivalOrderAndTheEarliestDeadlineAtTheHead) {
  InflightTable t(8);
  t.Track(5, 100);
  t.Track(2, 100);
  t.Track(7, 150);
  EXPECT_EQ(Unanswered(t), (std::vector<uint32_t>{5, 2, 7}));
  EXPECT_EQ(t.next_deadline_ms(), 100u);
  EXPECT_FALSE(t[2].answered);
}

TEST(InflightTable, AnsweringInAnyOrderUnlinksInConstantTime) {
  InflightTable t(8);
  for (uint32_t s : {0u, 1u, 2u, 3u, 4u}) t.Track(s, 10 * s);
  t.MarkAnswered(2);  // middle
  EXPECT_EQ(Unanswered(t), (std::vector<uint32_t>{0, 1, 3, 4}));
  t.MarkAnswered(0);  // head
  EXPECT_EQ(t.next_deadline_ms(), 10u);
  t.MarkAnswered(4);  // tail
  EXPECT_EQ(Unanswered(t), (std::vector<uint32_t>{1, 3}));
  EXPECT_TRUE(t[4].answered);
  t.Track(4, 50);  // the slot reused: back at the tail, unanswered again
  EXPECT_FALSE(t[4].answered);
  EXPECT_EQ(Unanswered(t), (std::vector<uint32_t>{1, 3, 4}));
  t.MarkAnswered(1);
  t.MarkAnswered(3);
  t.MarkAnswered(4);
  EXPECT_EQ(t.oldest_unanswered(), InflightTable::kNoSlot);
  EXPECT_EQ(t.next_deadline_ms(), UINT64_MAX);
}

TEST(InflightTableDeathTest, AnsweringTwiceIsABug) {
  InflightTable t(2);
  t.Track(1, 5);
  t.MarkAnswered(1);
  EXPECT_DEATH(t.MarkAnswered(1), "answered once");
}

}  // namespace
}  // namespace coapgate::engine
