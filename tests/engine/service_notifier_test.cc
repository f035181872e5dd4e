#include "engine/service_notifier.h"

#include <gtest/gtest.h>

#include <vector>

namespace coapgate::engine {
namespace {

TEST(ProgressWatch, PingsOnlyWhileEveryShardTurns) {
  ProgressWatch watch;
  EXPECT_TRUE(watch.AllMoved({5, 9}));   // nothing to compare with yet
  EXPECT_TRUE(watch.AllMoved({6, 12}));  // both moved
  EXPECT_FALSE(watch.AllMoved({7, 12}));  // shard 1 stood still for a whole interval
  EXPECT_EQ(watch.stuck(), 1u);
  EXPECT_TRUE(watch.AllMoved({8, 13}));  // and recovered
  EXPECT_FALSE(watch.AllMoved({8, 14}));
  EXPECT_EQ(watch.stuck(), 0u);
}

}  // namespace
}  // namespace coapgate::engine
