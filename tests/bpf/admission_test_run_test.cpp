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
#include "bpf/ztp_bpf_shared.h"
#include "tests/bpf/bpf_test_util.hpp"

namespace ztp::bpf {
namespace {

using bpf_test::kAck;
using bpf_test::kRst;
using bpf_test::kSyn;
using bpf_test::ipv4_with_options;
using bpf_test::ipv6_with_ext_headers;
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

// An IPv6 SYN from `src` with `n` Destination Options headers before TCP.
std::vector<uint8_t> syn6_with_dest_opts(const std::string& src, size_t n, uint8_t flags = kSyn) {
    return ipv6_with_ext_headers(tcp_packet(src, "2001:db8::1", flags),
                                 std::vector<uint8_t>(n, bpf_test::kDestOpts));
}

// Fail closed: a chain the program walks to its end is judged like any SYN; one longer than
// ZTP_IPV6_MAX_EXT_HEADERS is dropped and counted as unparsed, from a denied source and from an
// allowed one alike. Before this bound existed the program walked 4 headers and then KEPT the
// packet, so a denied source got in with 5.
TEST(AdmissionTestRun, Ipv6ExtensionHeaderChainsNeverAdmitADeniedSource) {
    AdmissionPolicy p;
    p.deny = {cidr("2001:db8:bad::/48")};
    auto a = load(p);
    ASSERT_TRUE(a);
    uint64_t denied = 0, admitted = 0, unparsed = 0;
    for (size_t n : {0, 4, 5, 8, 16, ZTP_IPV6_MAX_EXT_HEADERS, ZTP_IPV6_MAX_EXT_HEADERS + 1, 64}) {
        const bool parseable = n <= ZTP_IPV6_MAX_EXT_HEADERS;
        EXPECT_EQ(run(*a, syn6_with_dest_opts("2001:db8:bad::5", n)), 0u) << n << " headers, denied source";
        EXPECT_EQ(run(*a, syn6_with_dest_opts("2001:db8:1::5", n)) != 0, parseable) << n << " headers, allowed";
        (parseable ? denied : unparsed) += 1;
        (parseable ? admitted : unparsed) += 1;
        auto c = a->counters();
        EXPECT_EQ(c.denied, denied) << n;
        EXPECT_EQ(c.admitted, admitted) << n;
        EXPECT_EQ(c.unparsed, unparsed) << n;
    }
    // A segment that is not a SYN is dropped too when its chain cannot be walked: the program
    // cannot tell it is not a SYN. That costs only its sender's own connection.
    EXPECT_EQ(run(*a, syn6_with_dest_opts("2001:db8:1::5", ZTP_IPV6_MAX_EXT_HEADERS + 1, kAck)), 0u);
    EXPECT_NE(run(*a, syn6_with_dest_opts("2001:db8:1::5", 5, kAck)), 0u);
    EXPECT_EQ(a->counters().unparsed, unparsed + 1);
}

// Every kind of extension header the stack delivers before TCP, in one chain.
TEST(AdmissionTestRun, Ipv6MixedChainIsWalked) {
    AdmissionPolicy p;
    p.deny = {cidr("2001:db8:bad::/48")};
    auto a = load(p);
    ASSERT_TRUE(a);
    using namespace bpf_test;
    const std::vector<uint8_t> chain = {kHopByHop, kDestOpts, kRouting, kFragment, kAuth, kDestOpts};
    const uint16_t first_fragment_more_follow = 1;  // offset 0, M = 1: the TCP header is here
    EXPECT_EQ(run(*a, ipv6_with_ext_headers(tcp_packet("2001:db8:bad::5", "2001:db8::1", kSyn), chain,
                                            first_fragment_more_follow)),
              0u);
    EXPECT_NE(run(*a, ipv6_with_ext_headers(tcp_packet("2001:db8:1::5", "2001:db8::1", kSyn), chain,
                                            first_fragment_more_follow)),
              0u);
    auto c = a->counters();
    EXPECT_EQ(c.denied, 1u);
    EXPECT_EQ(c.admitted, 1u);
    EXPECT_EQ(c.unparsed, 0u);
}

// What cannot be parsed is dropped and counted, whoever sends it.
TEST(AdmissionTestRun, UnparseablePacketsAreDropped) {
    auto a = load({});  // admits every parseable SYN
    ASSERT_TRUE(a);
    using namespace bpf_test;
    const auto syn6 = tcp_packet("2001:db8:1::5", "2001:db8::1", kSyn);
    const auto syn4 = tcp_packet("10.1.2.3", "192.0.2.1", kSyn);
    std::vector<std::pair<std::string, std::vector<uint8_t>>> bad = {
        // A non-first fragment (offset 1 = 8 bytes): its TCP header is in another fragment.
        {"IPv6 non-first fragment", ipv6_with_ext_headers(syn6, {kFragment}, 1 << 3)},
        {"IPv6 ESP", ipv6_with_ext_headers(syn6, {kEsp})},
        {"IPv6 no next header", ipv6_with_ext_headers(syn6, {kNoNext})},
    };
    auto cut = [](std::vector<uint8_t> pkt, size_t drop) {
        pkt.resize(pkt.size() - drop);
        return pkt;
    };
    bad.push_back({"IPv6 extension header cut short", cut(ipv6_with_ext_headers(syn6, {kDestOpts}), 20 + 6)});
    bad.push_back({"IPv6 TCP header cut short", cut(syn6, 10)});
    bad.push_back({"IPv4 TCP header cut short", cut(syn4, 10)});
    auto ihl4 = syn4;
    ihl4[14] = 0x44;  // IHL 4: shorter than the fixed header
    bad.push_back({"IPv4 IHL < 5", ihl4});
    auto frag4 = syn4;
    frag4[14 + 7] = 1;  // fragment offset 1 (8 bytes)
    bad.push_back({"IPv4 non-first fragment", frag4});
    auto doff = syn4;
    doff[14 + 20 + 12] = 4 << 4;  // TCP data offset 4: shorter than the fixed header
    bad.push_back({"TCP data offset < 5", doff});
    auto v5 = syn4;
    v5[14] = 0x55;
    bad.push_back({"IP version 5", v5});
    for (const auto& [what, pkt] : bad) EXPECT_EQ(run(*a, pkt), 0u) << what;
    auto c = a->counters();
    EXPECT_EQ(c.unparsed, bad.size());
    EXPECT_EQ(c.admitted, 0u);
    // The well-formed versions pass: the drops above are the malformation's doing.
    EXPECT_NE(run(*a, syn6), 0u);
    EXPECT_NE(run(*a, syn4), 0u);
    EXPECT_NE(run(*a, ipv6_with_ext_headers(syn6, {kFragment}, 1)), 0u);  // first fragment, M = 1
}

// IPv4 options (IHL > 5) are skipped by IHL: the rules still apply behind 40 bytes of options.
TEST(AdmissionTestRun, Ipv4OptionsAreSkipped) {
    AdmissionPolicy p;
    p.deny = {cidr("10.9.0.0/16")};
    auto a = load(p);
    ASSERT_TRUE(a);
    for (size_t words : {1, 10}) {
        EXPECT_EQ(run(*a, ipv4_with_options(tcp_packet("10.9.1.1", "192.0.2.1", kSyn), words)), 0u) << words;
        EXPECT_NE(run(*a, ipv4_with_options(tcp_packet("10.1.1.1", "192.0.2.1", kSyn), words)), 0u) << words;
    }
    auto c = a->counters();
    EXPECT_EQ(c.denied, 2u);
    EXPECT_EQ(c.admitted, 2u);
    EXPECT_EQ(c.unparsed, 0u);
}

// The rate limit's source is a /64: addresses rotating inside one /64 share one bucket, so the
// rotation does not buy a fresh burst per address; another /64 has its own bucket. Time runs
// while the SYNs are sent (at 1/s a slow kernel refills a token now and then), so the rotation
// is bounded, not counted exactly; the checks on one bucket are back to back.
TEST(AdmissionTestRun, RateLimitKeysIpv6PerSlash64) {
    AdmissionPolicy p;
    p.rate_per_second = 1;
    p.burst = 2;
    auto a = load(p);
    ASSERT_TRUE(a);
    int passed = 0;
    for (int i = 1; i <= 100; ++i) passed += passes(*a, "2001:db8:1:2:" + std::to_string(i) + "::" + std::to_string(i));
    EXPECT_GE(passed, 2);
    EXPECT_LT(passed, 50);  // per /128 all 100 would pass
    EXPECT_TRUE(passes(*a, "2001:db8:1:3::1"));  // the neighbouring /64
    EXPECT_TRUE(passes(*a, "2001:db8:1:3::2"));
    EXPECT_FALSE(passes(*a, "2001:db8:1:3::3"));
    // IPv4 stays per address by default.
    EXPECT_TRUE(passes(*a, "10.1.2.3"));
    EXPECT_TRUE(passes(*a, "10.1.2.3"));
    EXPECT_FALSE(passes(*a, "10.1.2.3"));
    EXPECT_TRUE(passes(*a, "10.1.2.4"));
    auto c = a->counters();
    EXPECT_EQ(c.rate_limited, static_cast<uint64_t>(100 - passed) + 1 + 1);
    EXPECT_EQ(c.admitted, static_cast<uint64_t>(passed) + 2 + 2 + 1);
}

size_t rate_table_entries(const Admission& a) {
    size_t n = 0;
    ztp_addr key{}, next{};
    for (const void* prev = nullptr; bpf_map_get_next_key(a.rate_table_fd(), prev, &next) == 0; prev = &key) {
        key = next;
        ++n;
    }
    return n;
}

// A rotation through more addresses than the rate table holds fills one entry, not the table:
// the legitimate client's bucket is still there afterwards (the table's content, not a verdict,
// is checked: verdicts depend on how long the rotation took).
TEST(AdmissionTestRun, RotationDoesNotEvictOtherSources) {
    AdmissionPolicy p;
    p.rate_per_second = 1;
    p.burst = 1;
    auto a = load(p);
    ASSERT_TRUE(a);
    EXPECT_TRUE(passes(*a, "2001:db8:aaaa::1"));
    auto pkt = tcp_packet("2001:db8:bad:1::", "2001:db8::1", kSyn);
    for (uint32_t i = 0; i < ZTP_ADMISSION_RATE_ENTRIES + 1000; ++i) {
        std::memcpy(&pkt[14 + 8 + 12], &i, sizeof i);  // the source's last 4 bytes
        run(*a, pkt);
    }
    EXPECT_EQ(rate_table_entries(*a), 2u);
    ztp_addr legit{};
    ASSERT_EQ(inet_pton(AF_INET6, "2001:db8:aaaa::", legit.addr), 1);  // its /64
    uint64_t tat = 0;
    EXPECT_EQ(bpf_map_lookup_elem(a->rate_table_fd(), &legit, &tat), 0) << "the legitimate bucket was evicted";
}

// ipv6_rate_prefix = 128: the old per-address keying (each rotated address gets its own burst);
// ipv4_rate_prefix = 24: an IPv4 /24 shares one bucket.
TEST(AdmissionTestRun, RatePrefixIsConfigurable) {
    AdmissionPolicy p;
    p.rate_per_second = 1;
    p.burst = 1;
    p.ipv6_rate_prefix = 128;
    p.ipv4_rate_prefix = 24;
    auto a = load(p);
    ASSERT_TRUE(a);
    for (int i = 1; i <= 50; ++i) EXPECT_TRUE(passes(*a, "2001:db8:1:2::" + std::to_string(i))) << i;
    EXPECT_FALSE(passes(*a, "2001:db8:1:2::50"));  // right after its first: the address has a bucket
    EXPECT_TRUE(passes(*a, "10.1.2.3"));
    EXPECT_FALSE(passes(*a, "10.1.2.200"));
    EXPECT_TRUE(passes(*a, "10.1.3.1"));
    // A reload back to the defaults: the /64 shares one bucket again.
    AdmissionPolicy q = p;
    q.ipv6_rate_prefix = 64;
    q.ipv4_rate_prefix = 32;
    ASSERT_TRUE(a->update(q).ok());
    EXPECT_TRUE(passes(*a, "2001:db8:9:9::1"));
    EXPECT_FALSE(passes(*a, "2001:db8:9:9::2"));
}

TEST(AdmissionTestRun, RejectsInvalidPolicy) {
    AdmissionPolicy p;
    p.rate_per_second = 5;  // without a burst
    auto a = Admission::load(p);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.error().code, EINVAL);
    AdmissionPolicy q;
    q.ipv6_rate_prefix = 129;
    auto b = Admission::load(q);
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.error().code, EINVAL);
}

}  // namespace
}  // namespace ztp::bpf
