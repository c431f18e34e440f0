// Helpers for the bpf tests: loopback listeners and bounded connects, crafted packets.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "proxy/base/socket_address.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::bpf_test {

struct TestListener {
    UniqueFd fd;
    SocketAddress addr;  // with the kernel-chosen port
};

// socket + (SO_REUSEPORT) + bind + listen. `before_listen` runs between bind and listen.
template <typename F>
TestListener listen_on(const std::string& where, bool reuseport, F&& before_listen) {
    TestListener l;
    auto a = SocketAddress::parse(where);
    if (!a) return l;
    UniqueFd fd(::socket(a->family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (::bind(fd.get(), a->sa(), a->len()) != 0) return l;
    before_listen(fd.get());
    if (::listen(fd.get(), 128) != 0) return l;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    l.addr = SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    l.fd = std::move(fd);
    return l;
}

inline TestListener listen_on(const std::string& where, bool reuseport = false) {
    return listen_on(where, reuseport, [](int) {});
}

struct ConnectOutcome {
    int error = 0;  // 0 = connected, else errno (ETIMEDOUT when the SYNs went unanswered)
    UniqueFd fd;
};

// A nonblocking connect from `source_ip` (empty = any) that gives up quickly: TCP_SYNCNT=1 allows
// one SYN retransmission, and TCP_USER_TIMEOUT=500ms makes the kernel fail the connect with
// ETIMEDOUT when the first retransmission timer fires (~1 s, the initial RTO) instead of after
// the second. The poll bound is only a safety net.
inline ConnectOutcome connect_from(const std::string& source_ip, const SocketAddress& to, int poll_ms = 8000) {
    ConnectOutcome out;
    UniqueFd fd(::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int syncnt = 1, user_timeout_ms = 500;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_SYNCNT, &syncnt, sizeof syncnt);
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
    if (!source_ip.empty()) {
        std::string s = to.family() == AF_INET6 ? "[" + source_ip + "]:0" : source_ip + ":0";
        auto src = SocketAddress::parse(s);
        if (!src || ::bind(fd.get(), src->sa(), src->len()) != 0) {
            out.error = src ? errno : EINVAL;
            return out;
        }
    }
    if (::connect(fd.get(), to.sa(), to.len()) != 0) {
        if (errno != EINPROGRESS) {
            out.error = errno;
            return out;
        }
        pollfd p{fd.get(), POLLOUT, 0};
        int n = ::poll(&p, 1, poll_ms);
        if (n == 0) {
            out.error = ETIME;  // the safety net fired: the kernel did not time out as expected
            return out;
        }
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        out.error = err;
    }
    if (out.error == 0) out.fd = std::move(fd);
    return out;
}

// Accepts one pending connection within `ms`, returning the accepted fd and the peer address.
inline UniqueFd accept_within(int listen_fd, int ms, SocketAddress* peer = nullptr) {
    pollfd p{listen_fd, POLLIN, 0};
    if (::poll(&p, 1, ms) != 1) return {};
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    UniqueFd c(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC));
    if (c && peer) *peer = SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    return c;
}

// Ethernet + IPv4/IPv6 + TCP (20 bytes, no options), as BPF_PROG_TEST_RUN wants for a socket
// filter: the kernel strips the Ethernet header with eth_type_trans() and sets the network header
// at the IP header. Checksums are left zero (the program does not read them).
inline constexpr uint8_t kSyn = 0x02, kAck = 0x10, kRst = 0x04;

inline std::vector<uint8_t> tcp_packet(const std::string& src_ip, const std::string& dst_ip, uint8_t flags) {
    std::vector<uint8_t> p(14, 0);
    const bool v6 = src_ip.find(':') != std::string::npos;
    p[12] = v6 ? 0x86 : 0x08;
    p[13] = v6 ? 0xdd : 0x00;
    std::vector<uint8_t> tcp(20, 0);
    tcp[0] = 0x9c;  // source port 40000
    tcp[1] = 0x40;
    tcp[2] = 0x20;  // destination port 8443
    tcp[3] = 0xfb;
    tcp[12] = 5 << 4;  // data offset: 5 words
    tcp[13] = flags;
    tcp[14] = 0xff;  // window
    if (!v6) {
        uint8_t ip[20] = {0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, IPPROTO_TCP};
        inet_pton(AF_INET, src_ip.c_str(), ip + 12);
        inet_pton(AF_INET, dst_ip.c_str(), ip + 16);
        p.insert(p.end(), ip, ip + 20);
    } else {
        uint8_t ip[40] = {0x60, 0, 0, 0, 0, 20, IPPROTO_TCP, 64};
        inet_pton(AF_INET6, src_ip.c_str(), ip + 8);
        inet_pton(AF_INET6, dst_ip.c_str(), ip + 24);
        p.insert(p.end(), ip, ip + 40);
    }
    p.insert(p.end(), tcp.begin(), tcp.end());
    return p;
}

// IPv6 extension headers for ipv6_with_ext_headers(): the smallest well-formed one of each kind.
inline constexpr uint8_t kHopByHop = 0, kRouting = 43, kFragment = 44, kEsp = 50, kAuth = 51, kNoNext = 59,
                         kDestOpts = 60;

// `p` (a tcp_packet() for IPv6) with `types` inserted, in order, between the IPv6 header and
// whatever followed it; the next-header chain and the payload length are fixed up. A fragment
// header gets `frag_field` (offset in 8-byte units << 3 | M). ESP and No Next Header are written
// as 8 opaque bytes: the chain cannot be followed past them.
inline std::vector<uint8_t> ipv6_with_ext_headers(std::vector<uint8_t> p, const std::vector<uint8_t>& types,
                                                  uint16_t frag_field = 0) {
    constexpr size_t kIp6 = 14, kNextHdr = kIp6 + 6;
    std::vector<uint8_t> chain;
    for (size_t i = 0; i < types.size(); ++i) {
        const uint8_t t = types[i];
        std::vector<uint8_t> h(8, 0);
        h[0] = i + 1 < types.size() ? types[i + 1] : p[kNextHdr];  // next header
        if (t == kAuth) {
            h.resize(12, 0);  // len = 1: (1 + 2) * 4 = 12 bytes (reserved, SPI, sequence)
            h[1] = 1;
        } else if (t == kFragment) {
            h[2] = static_cast<uint8_t>(frag_field >> 8);
            h[3] = static_cast<uint8_t>(frag_field);
        } else if (t == kHopByHop || t == kDestOpts) {
            h[2] = 1;  // a PadN option covering the remaining 6 bytes
            h[3] = 4;
        }
        chain.insert(chain.end(), h.begin(), h.end());
    }
    if (!types.empty()) p[kNextHdr] = types[0];
    p.insert(p.begin() + kIp6 + 40, chain.begin(), chain.end());
    const size_t payload = p.size() - kIp6 - 40;
    p[kIp6 + 4] = static_cast<uint8_t>(payload >> 8);
    p[kIp6 + 5] = static_cast<uint8_t>(payload);
    return p;
}

// `p` (a tcp_packet() for IPv4) with `option_words` 4-byte words of IPv4 options (NOPs, ending in
// End of Options), IHL and total length fixed up.
inline std::vector<uint8_t> ipv4_with_options(std::vector<uint8_t> p, size_t option_words) {
    constexpr size_t kIp = 14;
    std::vector<uint8_t> opts(option_words * 4, 1);  // NOP
    if (!opts.empty()) opts.back() = 0;                // EOL
    p.insert(p.begin() + kIp + 20, opts.begin(), opts.end());
    p[kIp] = static_cast<uint8_t>(0x40 | (5 + option_words));
    const size_t total = p.size() - kIp;
    p[kIp + 2] = static_cast<uint8_t>(total >> 8);
    p[kIp + 3] = static_cast<uint8_t>(total);
    return p;
}

// Fills in the TCP checksum of an IPv6 packet from ipv6_with_ext_headers() (Ethernet header
// included, no routing header, TCP header last): the real receive path checks it before the
// socket filter runs.
inline void set_tcp6_checksum(std::vector<uint8_t>& p) {
    constexpr size_t kIp6 = 14;
    const size_t tcp_at = p.size() - 20;
    uint32_t sum = 0;
    auto add16 = [&](const uint8_t* b, size_t n) {
        for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(b[i] << 8 | b[i + 1]);
    };
    add16(&p[kIp6 + 8], 32);  // pseudo header: source, destination
    sum += 20 + IPPROTO_TCP;  // upper-layer length, next header
    p[tcp_at + 16] = p[tcp_at + 17] = 0;
    add16(&p[tcp_at], 20);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    const uint16_t c = static_cast<uint16_t>(~sum);
    p[tcp_at + 16] = static_cast<uint8_t>(c >> 8);
    p[tcp_at + 17] = static_cast<uint8_t>(c);
}

}  // namespace ztp::bpf_test
