// The user-space fallback: the same verdicts as the kernel program (compare
// admission_test_run_test.cpp), with time passed in.
#include "bpf/admission_fallback.hpp"

#include "bpf/ztp_bpf_shared.h"

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

// The same keying as the kernel (ztp_rate_key, admission_test_run_test.cpp RateLimitKeysIpv6PerSlash64):
// one bucket per IPv6 /64 and per IPv4 address by default.
TEST(AdmissionFallback, RateLimitKeysIpv6PerSlash64) {
    AdmissionPolicy p;
    p.rate_per_second = 1;
    p.burst = 2;
    AdmissionFallback f(p);
    int passed = 0;
    for (int i = 1; i <= 100; ++i)
        passed += f.admit(addr("2001:db8:1:2:" + std::to_string(i) + "::" + std::to_string(i)), t0);
    EXPECT_EQ(passed, 2);
    EXPECT_TRUE(f.admit(addr("2001:db8:1:3::1"), t0));
    EXPECT_TRUE(f.admit(addr("2001:db8:1:3::2"), t0));
    EXPECT_FALSE(f.admit(addr("2001:db8:1:3::3"), t0));
    EXPECT_TRUE(f.admit(addr("10.1.2.3"), t0));
    EXPECT_TRUE(f.admit(addr("::ffff:10.1.2.3"), t0));  // a dual-stack listener's view of the same peer
    EXPECT_FALSE(f.admit(addr("10.1.2.3"), t0));
    EXPECT_TRUE(f.admit(addr("10.1.2.4"), t0));
    auto c = f.counters();
    EXPECT_EQ(c.rate_limited, 100u);
    EXPECT_EQ(c.admitted, 7u);
}

TEST(AdmissionFallback, RotationDoesNotEvictOtherSources) {
    AdmissionPolicy p;
    p.rate_per_second = 1;
    p.burst = 1;
    AdmissionFallback f(p, 16);  // a small table: the rotation is far longer than it
    EXPECT_TRUE(f.admit(addr("2001:db8:aaaa::1"), t0));
    for (int i = 1; i <= 1000; ++i) f.admit(addr("2001:db8:bad:1::" + std::to_string(i)), t0);
    EXPECT_FALSE(f.admit(addr("2001:db8:aaaa::1"), t0));  // still tracked
    EXPECT_EQ(f.counters().admitted, 2u);
}

TEST(AdmissionFallback, RatePrefixIsConfigurable) {
    AdmissionPolicy p;
    p.rate_per_second = 1;
    p.burst = 1;
    p.ipv6_rate_prefix = 128;
    p.ipv4_rate_prefix = 24;
    AdmissionFallback f(p);
    for (int i = 1; i <= 50; ++i) EXPECT_TRUE(f.admit(addr("2001:db8:1:2::" + std::to_string(i)), t0)) << i;
    EXPECT_FALSE(f.admit(addr("2001:db8:1:2::1"), t0));
    EXPECT_TRUE(f.admit(addr("10.1.2.3"), t0));
    EXPECT_FALSE(f.admit(addr("10.1.2.200"), t0));
    EXPECT_FALSE(f.admit(addr("::ffff:10.1.2.9"), t0));
    EXPECT_TRUE(f.admit(addr("10.1.3.1"), t0));
    AdmissionPolicy q = p;  // reload to /56: 2001:db8:9:9:: and 2001:db8:9:10:: share a bucket
    q.ipv6_rate_prefix = 56;
    f.update(q);
    EXPECT_TRUE(f.admit(addr("2001:db8:9:9::1"), t0));
    EXPECT_FALSE(f.admit(addr("2001:db8:9:10::1"), t0));
    EXPECT_TRUE(f.admit(addr("2001:db8:9:100::1"), t0));
}

// Fail closed here too: a peer the rules cannot judge is refused and counted.
TEST(AdmissionFallback, NonIpPeerIsRefusedAsUnparsed) {
    AdmissionFallback f({});
    EXPECT_FALSE(f.admit(SocketAddress{}, t0));
    auto c = f.counters();
    EXPECT_EQ(c.unparsed, 1u);
    EXPECT_EQ(c.admitted, 0u);
}

// The key both sides compute: the address masked to the prefix (IPv4 over its mapped form).
TEST(AdmissionRateKey, MasksToThePrefix) {
    auto key = [](const std::string& ip, unsigned v6, unsigned v4) {
        ztp_admission_config cfg{};
        ztp_set_rate_prefixes(&cfg, v6, v4);
        const auto a = *mapped_address(addr(ip));
        std::array<uint8_t, 16> k{};
        ztp_rate_key(a.data(), &cfg, k.data());
        return k;
    };
    auto bytes = [](const std::string& ip) { return *mapped_address(addr(ip)); };
    EXPECT_EQ(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, 32), bytes("2001:db8:1:2::"));
    EXPECT_EQ(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 128, 32), bytes("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
    EXPECT_EQ(key("2001:db8:1:2ff:aaaa::1", 56, 32), bytes("2001:db8:1:200::"));
    EXPECT_EQ(key("2001:db8:1:2ff:aaaa::1", 33, 32), bytes("2001:db8::"));
    EXPECT_EQ(key("10.1.2.3", 64, 32), bytes("10.1.2.3"));
    EXPECT_EQ(key("10.1.2.3", 64, 24), bytes("10.1.2.0"));
    EXPECT_EQ(key("10.1.255.3", 64, 20), bytes("10.1.240.0"));
    EXPECT_EQ(key("::ffff:10.1.2.3", 64, 16), bytes("10.1.0.0"));  // the mapped form is IPv4
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

TEST(AdmissionPolicyCheck, RatePrefixRanges) {
    AdmissionPolicy p;
    for (unsigned v6 : {32u, 64u, 128u}) {
        p.ipv6_rate_prefix = v6;
        EXPECT_TRUE(check_policy(p).ok()) << v6;
    }
    for (unsigned v6 : {0u, 31u, 129u}) {
        p.ipv6_rate_prefix = v6;
        EXPECT_FALSE(check_policy(p).ok()) << v6;
    }
    p.ipv6_rate_prefix = 64;
    for (unsigned v4 : {16u, 24u, 32u}) {
        p.ipv4_rate_prefix = v4;
        EXPECT_TRUE(check_policy(p).ok()) << v4;
    }
    for (unsigned v4 : {15u, 33u}) {
        p.ipv4_rate_prefix = v4;
        EXPECT_FALSE(check_policy(p).ok()) << v4;
    }
}

}  // namespace
}  // namespace ztp::bpf
