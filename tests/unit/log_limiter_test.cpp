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

TEST(LogLimiter, AWiderWindowLetsItsBudgetThroughOncePerWindow) {
    using std::chrono::seconds;
    LogLimiter limiter(1, seconds(10));  // the key_update_unsupported line: one per 10 s
    const auto t0 = LogLimiter::Clock::time_point{} + std::chrono::hours(1);
    EXPECT_EQ(limiter.allow(t0), std::optional<uint64_t>(0));
    EXPECT_EQ(limiter.allow(t0 + seconds(1)), std::nullopt);
    EXPECT_EQ(limiter.allow(t0 + seconds(9)), std::nullopt);
    EXPECT_EQ(limiter.allow(t0 + seconds(10)), std::optional<uint64_t>(2));
    EXPECT_EQ(limiter.allow(t0 + seconds(19)), std::nullopt);
}

TEST(LogLimiter, TheFirstLineGoesThroughRightAfterTheClockStarted) {
    // steady_clock counts from boot: in a VM that booted a moment ago, "now" is close to zero.
    for (auto window : {LogLimiter::Clock::duration(std::chrono::seconds(1)),
                        LogLimiter::Clock::duration(std::chrono::seconds(10))}) {
        LogLimiter limiter(1, window);
        const auto boot = LogLimiter::Clock::time_point{};
        EXPECT_EQ(limiter.allow(boot + std::chrono::milliseconds(5)), std::optional<uint64_t>(0));
        EXPECT_EQ(limiter.allow(boot + std::chrono::milliseconds(6)), std::nullopt);
        EXPECT_EQ(limiter.allow(boot + window), std::optional<uint64_t>(1));
    }
}

}  // namespace
}  // namespace ztp::log
