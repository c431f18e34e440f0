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

}  // namespace ztp::bpf_test
