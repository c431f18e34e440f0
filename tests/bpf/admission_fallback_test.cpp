// The user-space fallback: the same verdicts as the kernel program (compare
// admission_test_run_test.cpp), with time passed in.
#include "bpf/admission_fallback.hpp"

#include <gtest/gtest.h>

namespace ztp::bpf {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

SocketAddress addr(const std::string& ip) {
    return *SocketAddress::parse(ip.find(':') != std::string::npos ? "[" + ip + "]:1234" : ip + ":1234");
}
Cidr cidr(const char* s) { return *Cidr::parse(s); }

const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);

TEST(AdmissionFallback, EmptyPolicyAdmitsAll) {
    AdmissionFallback f({});
    EXPECT_TRUE(f.admit(addr("10.1.2.3"), t0));
    EXPECT_TRUE(f.admit(addr("2001:db8::1"), t0));
    EXPECT_EQ(f.counters().admitted, 2u);
}

TEST(AdmissionFallback, DenyWinsOverAllow) {
    AdmissionPolicy p;
    p.allow = {cidr("10.0.0.0/8"), cidr("2001:db8::/32")};
    p.deny = {cidr("10.9.0.0/16"), cidr("10.9.9.0/24"), cidr("2001:db8:bad::/48")};
    AdmissionFallback f(p);
    EXPECT_TRUE(f.admit(addr("10.1.2.3"), t0));
    EXPECT_TRUE(f.admit(addr("::ffff:10.1.2.3"), t0));
    EXPECT_FALSE(f.admit(addr("10.9.1.1"), t0));
    EXPECT_FALSE(f.admit(addr("10.9.9.9"), t0));
    EXPECT_FALSE(f.admit(addr("::ffff:10.9.9.9"), t0));
    EXPECT_FALSE(f.admit(addr("2001:db8:bad::1"), t0));
    EXPECT_TRUE(f.admit(addr("2001:db8:1::1"), t0));
    EXPECT_FALSE(f.admit(addr("192.168.0.1"), t0));
    EXPECT_FALSE(f.admit(addr("2001:db9::1"), t0));
    auto c = f.counters();
    EXPECT_EQ(c.admitted, 3u);
    EXPECT_EQ(c.denied, 4u);
    EXPECT_EQ(c.not_allowed, 2u);
    EXPECT_EQ(c.per_deny_rule, (std::vector<uint64_t>{1, 2, 1}));  // longest prefix gets the count
}

TEST(AdmissionFallback, RateLimitBurstThenOnePerInterval) {
    AdmissionPolicy p;
    p.rate_per_second = 10;  // one every 100 ms
    p.burst = 3;
    AdmissionFallback f(p);
    const auto a = addr("10.1.2.3");
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(f.admit(a, t0)) << i;
    EXPECT_FALSE(f.admit(a, t0));
    EXPECT_FALSE(f.admit(a, t0 + milliseconds(99)));
    EXPECT_TRUE(f.admit(a, t0 + milliseconds(100)));
    EXPECT_FALSE(f.admit(a, t0 + milliseconds(150)));
    EXPECT_TRUE(f.admit(a, t0 + milliseconds(200)));
    // Idle long enough: the full burst is back, no more.
    const auto later = t0 + std::chrono::seconds(10);
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(f.admit(a, later)) << i;
    EXPECT_FALSE(f.admit(a, later));
    // Another source has its own bucket.
    EXPECT_TRUE(f.admit(addr("10.1.2.4"), t0));
    auto c = f.counters();
    EXPECT_EQ(c.rate_limited, 4u);
    EXPECT_EQ(c.admitted, 9u);
}

TEST(AdmissionFallback, BurstOfOne) {
    AdmissionPolicy p;
    p.rate_per_second = 2;
    p.burst = 1;
    AdmissionFallback f(p);
    const auto a = addr("2001:db8::7");
    EXPECT_TRUE(f.admit(a, t0));
    EXPECT_FALSE(f.admit(a, t0 + milliseconds(499)));
    EXPECT_TRUE(f.admit(a, t0 + milliseconds(500)));
}

TEST(AdmissionFallback, BoundedTableEvictsLeastRecent) {
    AdmissionPolicy p;
    p.rate_per_second = 1;
    p.burst = 1;
    AdmissionFallback f(p, 2);
    EXPECT_TRUE(f.admit(addr("10.0.0.1"), t0));
    EXPECT_TRUE(f.admit(addr("10.0.0.2"), t0));
    EXPECT_FALSE(f.admit(addr("10.0.0.1"), t0));  // touches .1: .2 is now the oldest
    EXPECT_TRUE(f.admit(addr("10.0.0.3"), t0));   // evicts .2
    EXPECT_FALSE(f.admit(addr("10.0.0.1"), t0));  // still tracked
    EXPECT_TRUE(f.admit(addr("10.0.0.2"), t0));   // forgotten: a fresh bucket
}

TEST(AdmissionFallback, UpdateKeepsRateStateAndResetsRuleCounts) {
    AdmissionPolicy p;
    p.deny = {cidr("10.0.0.0/8")};
    AdmissionFallback f(p);
    EXPECT_FALSE(f.admit(addr("10.1.1.1"), t0));
    EXPECT_EQ(f.counters().per_deny_rule, (std::vector<uint64_t>{1}));
    AdmissionPolicy q;
    q.deny = {cidr("192.0.2.0/24"), cidr("10.0.0.0/8")};
    f.update(q);
    EXPECT_EQ(f.counters().per_deny_rule, (std::vector<uint64_t>{0, 0}));
    EXPECT_FALSE(f.admit(addr("10.1.1.1"), t0));
    EXPECT_EQ(f.counters().per_deny_rule, (std::vector<uint64_t>{0, 1}));
    EXPECT_EQ(f.counters().denied, 2u);
    f.update({});
    EXPECT_TRUE(f.admit(addr("10.1.1.1"), t0));
}

TEST(AdmissionPolicyCheck, RateAndBurstTogether) {
    AdmissionPolicy p;
    p.rate_per_second = 5;
    EXPECT_FALSE(check_policy(p).ok());
    p.burst = 5;
    EXPECT_TRUE(check_policy(p).ok());
    p.rate_per_second = 0;
    EXPECT_FALSE(check_policy(p).ok());
}

}  // namespace
}  // namespace ztp::bpf
