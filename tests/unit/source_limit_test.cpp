#include "proxy/conn/source_limit.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace ztp::conn {
namespace {

SocketAddress addr(const char* text) { return *SocketAddress::parse(text); }

TEST(SourceLimit, HoldsAtMostTheLimitPerAddressAndReleasesWithTheSlot) {
    SourceLimit limit;
    const auto a = addr("192.0.2.1:1000");
    std::vector<SourceLimit::Slot> held;
    for (int i = 0; i < 3; ++i) {
        auto r = limit.acquire(a, 3);
        ASSERT_TRUE(r.admitted);
        held.push_back(std::move(r.slot));
    }
    EXPECT_FALSE(limit.acquire(addr("192.0.2.1:2000"), 3).admitted) << "another port of the same address";
    EXPECT_TRUE(limit.acquire(addr("192.0.2.2:1000"), 3).admitted) << "another address has its own share";
    EXPECT_EQ(limit.held(a), 3u);
    held.pop_back();  // a connection ends
    EXPECT_EQ(limit.held(a), 2u);
    auto again = limit.acquire(a, 3);
    EXPECT_TRUE(again.admitted);
    held.clear();
    again.slot = {};
    EXPECT_EQ(limit.held(a), 0u);
    EXPECT_EQ(limit.tracked_sources(), 0u) << "sources without connections are forgotten";
}

TEST(SourceLimit, Ipv4AndItsMappedIpv6FormAreOneSource) {
    SourceLimit limit;
    auto r = limit.acquire(addr("198.51.100.7:1"), 1);
    ASSERT_TRUE(r.admitted);
    EXPECT_FALSE(limit.acquire(addr("[::ffff:198.51.100.7]:2"), 1).admitted);
}

TEST(SourceLimit, ZeroMeansNoLimitAndTracksNothing) {
    SourceLimit limit;
    auto r = limit.acquire(addr("192.0.2.1:1"), 0);
    EXPECT_TRUE(r.admitted);
    EXPECT_FALSE(r.slot);
    EXPECT_EQ(limit.tracked_sources(), 0u);
}

TEST(SourceLimit, MovedSlotsReleaseOnce) {
    SourceLimit limit;
    const auto a = addr("192.0.2.9:1");
    auto r = limit.acquire(a, 2);
    SourceLimit::Slot moved = std::move(r.slot);
    SourceLimit::Slot assigned;
    assigned = std::move(moved);
    EXPECT_EQ(limit.held(a), 1u);
    assigned = {};
    EXPECT_EQ(limit.held(a), 0u);
}

TEST(SourceLimit, ThreadsNeverExceedTheLimit) {
    SourceLimit limit;
    const auto a = addr("203.0.113.5:1");
    std::atomic<int> admitted{0};
    std::vector<std::thread> threads;
    std::vector<std::vector<SourceLimit::Slot>> slots(4);
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 1000; ++i) {
                auto r = limit.acquire(a, 100);
                if (r.admitted) {
                    ++admitted;
                    slots[t].push_back(std::move(r.slot));
                }
            }
        });
    for (auto& th : threads) th.join();
    EXPECT_EQ(admitted.load(), 100);
    EXPECT_EQ(limit.held(a), 100u);
}

}  // namespace
}  // namespace ztp::conn
