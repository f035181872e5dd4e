#include "common/rate_limiter.h"

#include <gtest/gtest.h>

namespace coapgate {
namespace {

TEST(RateLimiter, OneEventPerIntervalAndTheCountOfTheRest) {
  RateLimiter limiter(1000);
  uint64_t suppressed = 99;
  EXPECT_TRUE(limiter.Allow(5000, &suppressed));
  EXPECT_EQ(suppressed, 0u);
  EXPECT_FALSE(limiter.Allow(5001));
  EXPECT_FALSE(limiter.Allow(5999));
  EXPECT_TRUE(limiter.Allow(6000, &suppressed));
  EXPECT_EQ(suppressed, 2u);
  EXPECT_FALSE(limiter.Allow(6500));
  EXPECT_TRUE(limiter.Allow(9000, &suppressed));
  EXPECT_EQ(suppressed, 1u);
}

}  // namespace
}  // namespace coapgate
