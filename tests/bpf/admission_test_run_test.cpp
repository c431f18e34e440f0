// The admission program under BPF_PROG_TEST_RUN with crafted packets.
//
// Does test_run show the program what it sees at run time? For a socket filter,
// bpf_prog_test_run_skb() runs eth_type_trans() (skb->data then starts at the IP header) and
// skb_reset_network_header(): the network header is the IP header, as it is at run time in
// tcp_filter() (where skb->data has moved on to the TCP header). The program reads only relative
// to the network header (BPF_HDR_START_NET), so both agree. What differs is skb->len (IP packet
// here, TCP segment there), which the program only returns as "keep everything". The socket tests
// (admission_socket_test.cpp) check the same behaviour on real SYNs.
#include <bpf/bpf.h>

#include <gtest/gtest.h>

#include "bpf/admission.hpp"
#include "tests/bpf/bpf_test_util.hpp"

namespace ztp::bpf {
namespace {

using bpf_test::kAck;
using bpf_test::kRst;
using bpf_test::kSyn;
using bpf_test::tcp_packet;

Cidr cidr(const char* s) { return *Cidr::parse(s); }

// The program's return value: bytes to keep, 0 = drop.
uint32_t run(const Admission& a, const std::vector<uint8_t>& pkt) {
    bpf_test_run_opts opts{};
    opts.sz = sizeof opts;
    opts.data_in = pkt.data();
    opts.data_size_in = static_cast<uint32_t>(pkt.size());
    opts.repeat = 1;
    int err = bpf_prog_test_run_opts(a.prog_fd(), &opts);
    EXPECT_EQ(err, 0) << std::strerror(-err);
    return opts.retval;
}

bool passes(const Admission& a, const std::string& src, uint8_t flags = kSyn) {
    const std::string dst = src.find(':') != std::string::npos ? "2001:db8::1" : "192.0.2.1";
    return run(a, tcp_packet(src, dst, flags)) != 0;
}

std::unique_ptr<Admission> load(const AdmissionPolicy& p) {
    auto a = Admission::load(p);
    EXPECT_TRUE(a.ok()) << (a.ok() ? "" : a.error().message());
    return a.ok() ? std::move(a).value() : nullptr;
}

TEST(AdmissionTestRun, KeepsWholePacketWhenAdmitted) {
    auto a = load({});
    ASSERT_TRUE(a);
    auto pkt = tcp_packet("10.1.2.3", "192.0.2.1", kSyn);
    // skb->len under test_run is the IP packet (the Ethernet header was pulled).
    EXPECT_EQ(run(*a, pkt), pkt.size() - 14);
    EXPECT_EQ(a->counters().admitted, 1u);
}

TEST(AdmissionTestRun, Ipv4AllowAndDeny) {
    AdmissionPolicy p;
    p.allow = {cidr("10.0.0.0/8")};
    p.deny = {cidr("10.9.0.0/16"), cidr("10.9.9.0/24")};
    auto a = load(p);
    ASSERT_TRUE(a);
    EXPECT_TRUE(passes(*a, "10.1.2.3"));
    EXPECT_FALSE(passes(*a, "10.9.1.1"));      // deny rule 0
    EXPECT_FALSE(passes(*a, "10.9.9.9"));      // deny rule 1 (longest prefix) — deny wins over allow
    EXPECT_FALSE(passes(*a, "10.9.9.10"));
    EXPECT_FALSE(passes(*a, "192.168.1.1"));   // outside the allow list
    auto c = a->counters();
    EXPECT_EQ(c.admitted, 1u);
    EXPECT_EQ(c.denied, 3u);
    EXPECT_EQ(c.not_allowed, 1u);
    EXPECT_EQ(c.rate_limited, 0u);
    EXPECT_EQ(c.per_deny_rule, (std::vector<uint64_t>{1, 2}));
    EXPECT_EQ(c.unparsed, 0u);
}

TEST(AdmissionTestRun, Ipv6AllowAndDeny) {
    AdmissionPolicy p;
    p.allow = {cidr("2001:db8::/32"), cidr("10.0.0.0/8")};
    p.deny = {cidr("2001:db8:bad::/48")};
    auto a = load(p);
    ASSERT_TRUE(a);
    EXPECT_TRUE(passes(*a, "2001:db8:1::5"));
    EXPECT_FALSE(passes(*a, "2001:db8:bad::5"));
    EXPECT_FALSE(passes(*a, "2001:db9::1"));
    // The IPv4 rule matches an IPv4-mapped IPv6 source (and the IPv4 packet itself).
    EXPECT_TRUE(passes(*a, "::ffff:10.0.0.7"));
    EXPECT_TRUE(passes(*a, "10.0.0.7"));
    auto c = a->counters();
    EXPECT_EQ(c.admitted, 3u);
    EXPECT_EQ(c.denied, 1u);
    EXPECT_EQ(c.not_allowed, 1u);
    EXPECT_EQ(c.per_deny_rule, (std::vector<uint64_t>{1}));
}

TEST(AdmissionTestRun, EmptyAllowAdmitsEveryone) {
    AdmissionPolicy p;
    p.deny = {cidr("203.0.113.0/24")};
    auto a = load(p);
    ASSERT_TRUE(a);
    EXPECT_TRUE(passes(*a, "198.51.100.1"));
    EXPECT_TRUE(passes(*a, "2001:db8::1"));
    EXPECT_FALSE(passes(*a, "203.0.113.1"));
}

TEST(AdmissionTestRun, OnlySynWithoutAckIsJudged) {
    AdmissionPolicy p;
    p.deny = {cidr("0.0.0.0/0"), cidr("::/0")};
    auto a = load(p);
    ASSERT_TRUE(a);
    EXPECT_FALSE(passes(*a, "10.1.2.3", kSyn));
    EXPECT_FALSE(passes(*a, "2001:db8::1", kSyn));
    EXPECT_TRUE(passes(*a, "10.1.2.3", kAck));
    EXPECT_TRUE(passes(*a, "10.1.2.3", kSyn | kAck));
    EXPECT_TRUE(passes(*a, "10.1.2.3", kRst));
    EXPECT_TRUE(passes(*a, "2001:db8::1", kAck));
    auto c = a->counters();
    EXPECT_EQ(c.denied, 2u);
    EXPECT_EQ(c.admitted, 0u);  // non-SYN segments are not counted at all
    EXPECT_EQ(c.per_deny_rule, (std::vector<uint64_t>{1, 1}));
}

TEST(AdmissionTestRun, RateLimitAllowsBurstThenDrops) {
    AdmissionPolicy p;
    p.rate_per_second = 1;  // one token per second: no refill within this test
    p.burst = 3;
    auto a = load(p);
    ASSERT_TRUE(a);
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(passes(*a, "10.1.2.3")) << i;
    EXPECT_FALSE(passes(*a, "10.1.2.3"));
    EXPECT_FALSE(passes(*a, "10.1.2.3"));
    // Per source address: another client has its own bucket, IPv6 too.
    EXPECT_TRUE(passes(*a, "10.1.2.4"));
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(passes(*a, "2001:db8::1")) << i;
    EXPECT_FALSE(passes(*a, "2001:db8::1"));
    // Non-SYN segments of the limited client still pass.
    EXPECT_TRUE(passes(*a, "10.1.2.3", kAck));
    auto c = a->counters();
    EXPECT_EQ(c.admitted, 7u);
    EXPECT_EQ(c.rate_limited, 3u);
}

TEST(AdmissionTestRun, UpdateReplacesRulesInPlace) {
    AdmissionPolicy p;
    p.deny = {cidr("10.0.0.0/8")};
    auto a = load(p);
    ASSERT_TRUE(a);
    EXPECT_FALSE(passes(*a, "10.1.2.3"));
    EXPECT_TRUE(passes(*a, "192.0.2.9"));

    AdmissionPolicy q;
    q.allow = {cidr("10.0.0.0/8")};
    ASSERT_TRUE(a->update(q).ok());
    EXPECT_TRUE(passes(*a, "10.1.2.3"));
    EXPECT_FALSE(passes(*a, "192.0.2.9"));

    ASSERT_TRUE(a->update({}).ok());  // back to admit-all
    EXPECT_TRUE(passes(*a, "192.0.2.9"));
    EXPECT_EQ(a->counters().per_deny_rule.size(), 0u);
}

TEST(AdmissionTestRun, RejectsInvalidPolicy) {
    AdmissionPolicy p;
    p.rate_per_second = 5;  // without a burst
    auto a = Admission::load(p);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.error().code, EINVAL);
}

}  // namespace
}  // namespace ztp::bpf
