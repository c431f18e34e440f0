#include "proxy/base/log_limiter.hpp"

#include <gtest/gtest.h>

namespace ztp::log {
namespace {

TEST(LogLimiter, LetsABudgetPerSecondThroughAndCountsTheRest) {
    LogLimiter limiter(2);
    const auto t0 = LogLimiter::Clock::time_point{} + std::chrono::hours(1);
    EXPECT_EQ(limiter.allow(t0), std::optional<uint64_t>(0));
    EXPECT_EQ(limiter.allow(t0 + std::chrono::milliseconds(10)), std::optional<uint64_t>(0));
    EXPECT_EQ(limiter.allow(t0 + std::chrono::milliseconds(20)), std::nullopt);
    EXPECT_EQ(limiter.allow(t0 + std::chrono::milliseconds(999)), std::nullopt);
    // A new window: the first line through says how many were held back.
    EXPECT_EQ(limiter.allow(t0 + std::chrono::milliseconds(1000)), std::optional<uint64_t>(2));
    EXPECT_EQ(limiter.allow(t0 + std::chrono::milliseconds(1001)), std::optional<uint64_t>(0));
    EXPECT_EQ(limiter.allow(t0 + std::chrono::milliseconds(1002)), std::nullopt);
}

}  // namespace
}  // namespace ztp::log
