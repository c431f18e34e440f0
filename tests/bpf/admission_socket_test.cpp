// The admission program attached to real listening sockets on loopback: a denied client's SYNs are
// dropped before any handshake (its connect times out), an allowed one connects, and update()
// changes the verdict without detaching. Loopback routes all of 127.0.0.0/8, so clients bind
// 127.0.0.x to be different source addresses.
#include <gtest/gtest.h>

#include "bpf/admission.hpp"
#include "tests/bpf/bpf_test_util.hpp"

namespace ztp::bpf {
namespace {

using bpf_test::accept_within;
using bpf_test::connect_from;
using bpf_test::listen_on;

Cidr cidr(const char* s) { return *Cidr::parse(s); }

std::unique_ptr<Admission> load(const AdmissionPolicy& p) {
    auto a = Admission::load(p);
    EXPECT_TRUE(a.ok()) << (a.ok() ? "" : a.error().message());
    return a.ok() ? std::move(a).value() : nullptr;
}

TEST(AdmissionSocket, DeniedClientNeverCompletesTheHandshake) {
    auto a = load({});
    ASSERT_TRUE(a);
    auto l = listen_on("127.0.0.1:0", false, [&](int fd) { ASSERT_TRUE(a->attach(fd).ok()); });
    ASSERT_TRUE(l.fd);

    auto ok = connect_from("127.0.0.1", l.addr);
    EXPECT_EQ(ok.error, 0) << std::strerror(ok.error);
    EXPECT_TRUE(accept_within(l.fd.get(), 2000));

    AdmissionPolicy deny;
    deny.deny = {cidr("127.0.0.0/8")};
    ASSERT_TRUE(a->update(deny).ok());
    auto refused = connect_from("127.0.0.1", l.addr);
    EXPECT_EQ(refused.error, ETIMEDOUT) << std::strerror(refused.error);
    auto c = a->counters();
    EXPECT_GE(c.denied, 1u);
    ASSERT_EQ(c.per_deny_rule.size(), 1u);
    EXPECT_EQ(c.per_deny_rule[0], c.denied);
    EXPECT_FALSE(accept_within(l.fd.get(), 0));  // nothing reached the accept queue

    // Same program, same socket, maps replaced: the same client gets in.
    ASSERT_TRUE(a->update({}).ok());
    auto again = connect_from("127.0.0.1", l.addr);
    EXPECT_EQ(again.error, 0) << std::strerror(again.error);
    EXPECT_TRUE(accept_within(l.fd.get(), 2000));
}

TEST(AdmissionSocket, PerSourceAddressRules) {
    AdmissionPolicy p;
    p.allow = {cidr("127.0.0.0/24")};
    p.deny = {cidr("127.0.0.3/32")};
    auto a = load(p);
    ASSERT_TRUE(a);
    auto l = listen_on("127.0.0.1:0", false, [&](int fd) { ASSERT_TRUE(a->attach(fd).ok()); });
    ASSERT_TRUE(l.fd);

    EXPECT_EQ(connect_from("127.0.0.2", l.addr).error, 0);
    SocketAddress peer;
    ASSERT_TRUE(accept_within(l.fd.get(), 2000, &peer));
    EXPECT_EQ(peer.ip_string(), "127.0.0.2");
    EXPECT_EQ(connect_from("127.0.0.3", l.addr).error, ETIMEDOUT);  // deny rule
    EXPECT_EQ(connect_from("127.0.1.1", l.addr).error, ETIMEDOUT);  // outside the allow list
    auto c = a->counters();
    EXPECT_GE(c.denied, 1u);
    EXPECT_GE(c.not_allowed, 1u);
    EXPECT_EQ(c.admitted, 1u);
}

TEST(AdmissionSocket, RateLimitOnRealSyns) {
    AdmissionPolicy p;
    p.rate_per_second = 1;
    p.burst = 2;
    auto a = load(p);
    ASSERT_TRUE(a);
    auto l = listen_on("127.0.0.1:0", false, [&](int fd) { ASSERT_TRUE(a->attach(fd).ok()); });
    ASSERT_TRUE(l.fd);
    auto c1 = connect_from("127.0.0.5", l.addr);
    auto c2 = connect_from("127.0.0.5", l.addr);
    EXPECT_EQ(c1.error, 0);
    EXPECT_EQ(c2.error, 0);
    // The third SYN is dropped: no SYN-ACK, so no connection within 500 ms (ETIME is the helper's
    // poll bound). The lowest rate is 1/s and the first SYN retransmission comes after 1 s (initial
    // RTO), so that one would find a new token: the client is slowed down, not banned.
    EXPECT_EQ(connect_from("127.0.0.5", l.addr, 500).error, ETIME);
    EXPECT_EQ(connect_from("127.0.0.6", l.addr).error, 0);  // another source: its own bucket
    auto c = a->counters();
    EXPECT_GE(c.rate_limited, 1u);
    EXPECT_EQ(c.admitted, 3u);
}

TEST(AdmissionSocket, Ipv6Loopback) {
    AdmissionPolicy p;
    p.deny = {cidr("::1/128")};
    auto a = load(p);
    ASSERT_TRUE(a);
    auto l = listen_on("[::1]:0", false, [&](int fd) { ASSERT_TRUE(a->attach(fd).ok()); });
    if (!l.fd) GTEST_SKIP() << "no IPv6 loopback here";
    EXPECT_EQ(connect_from("", l.addr).error, ETIMEDOUT);
    EXPECT_GE(a->counters().denied, 1u);
    ASSERT_TRUE(a->update({}).ok());
    EXPECT_EQ(connect_from("", l.addr).error, 0);
}

TEST(AdmissionSocket, AcceptedSocketsInheritTheFilterAndStillWork) {
    // Accepted sockets carry a copy of the listener's filter. A deny that arrives after accept must
    // not cut the established connection: only SYNs are judged.
    auto a = load({});
    ASSERT_TRUE(a);
    auto l = listen_on("127.0.0.1:0", false, [&](int fd) { ASSERT_TRUE(a->attach(fd).ok()); });
    ASSERT_TRUE(l.fd);
    auto client = connect_from("127.0.0.1", l.addr);
    ASSERT_EQ(client.error, 0);
    UniqueFd server = accept_within(l.fd.get(), 2000);
    ASSERT_TRUE(server);
    AdmissionPolicy deny;
    deny.deny = {cidr("127.0.0.0/8")};
    ASSERT_TRUE(a->update(deny).ok());
    ASSERT_EQ(::send(client.fd.get(), "ping", 4, MSG_NOSIGNAL), 4);
    pollfd pfd{server.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 2000), 1);
    char buf[8];
    EXPECT_EQ(::recv(server.get(), buf, sizeof buf, 0), 4);
    EXPECT_TRUE(Admission::detach(server.get()).ok());
}

// The extension-header walk on the real receive path, where skb->data has moved past the headers
// and only the network-header offset leads back to them: a SYN from ::1 with 5 Destination Options
// headers, sent through a raw socket to a listener on ::1, is judged (denied under a deny rule,
// admitted without one), not passed unjudged. The verdict counters say which: a wrong TCP offset
// would read garbage flags and count nothing.
TEST(AdmissionSocket, Ipv6SynWithFiveExtensionHeadersIsJudgedOnTheRealPath) {
    for (const bool deny : {true, false}) {
        AdmissionPolicy p;
        if (deny) p.deny = {cidr("::1/128")};
        auto a = load(p);
        ASSERT_TRUE(a);
        auto l = listen_on("[::1]:0", false, [&](int fd) { ASSERT_TRUE(a->attach(fd).ok()); });
        if (!l.fd) GTEST_SKIP() << "no IPv6 loopback here";
        // IPPROTO_RAW: the packet is sent as written, IPv6 header included (IPV6_HDRINCL).
        UniqueFd raw(::socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
        ASSERT_TRUE(raw) << std::strerror(errno);
        auto pkt = bpf_test::tcp_packet("::1", "::1", bpf_test::kSyn);
        const uint16_t port = l.addr.port();
        pkt[14 + 40 + 2] = static_cast<uint8_t>(port >> 8);  // destination port
        pkt[14 + 40 + 3] = static_cast<uint8_t>(port);
        pkt = bpf_test::ipv6_with_ext_headers(pkt, std::vector<uint8_t>(5, bpf_test::kDestOpts));
        bpf_test::set_tcp6_checksum(pkt);
        // A raw socket reads sin6_port as a protocol number (> 255 is EINVAL): send to port 0.
        const auto to = *SocketAddress::parse("[::1]:0");
        ASSERT_EQ(::sendto(raw.get(), pkt.data() + 14, pkt.size() - 14, 0, to.sa(), to.len()),
                  static_cast<ssize_t>(pkt.size() - 14))
            << std::strerror(errno);
        // Loopback delivers in softirq context, usually before sendto returns: wait for the verdict.
        AdmissionCounters c;
        for (int i = 0; i < 200; ++i) {
            c = a->counters();
            if (c.denied + c.admitted + c.unparsed != 0) break;
            pollfd none{-1, 0, 0};
            ::poll(&none, 1, 10);
        }
        EXPECT_EQ(c.denied, deny ? 1u : 0u) << (deny ? "deny rule" : "no rule");
        EXPECT_EQ(c.admitted, deny ? 0u : 1u) << (deny ? "deny rule" : "no rule");
        EXPECT_EQ(c.unparsed, 0u);
    }
}

}  // namespace
}  // namespace ztp::bpf
