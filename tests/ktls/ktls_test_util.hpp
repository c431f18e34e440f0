// Shared helpers for the kTLS tests: loopback TCP pairs, /proc/net/tls_stat counters, fixed key
// material, and the version × cipher parameter set (as in tools/testing/selftests/net/tls.c).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <cstdint>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "config/policy.hpp"
#include "crypto/ktls_sockopt.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::ktls_test {

struct TcpPair {
    UniqueFd a, b;  // a = connecting end, b = accepted end
};

// A connected loopback pair with generous timeouts: a kernel bug must fail a test, never hang it
// (UML syscalls are slow; 20 s is far beyond any legitimate wait here).
inline TcpPair tcp_pair() {
    TcpPair p;
    UniqueFd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (!l || ::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l.get(), 1) != 0 ||
        ::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &al) != 0) {
        ADD_FAILURE() << "loopback listener: " << std::strerror(errno);
        return p;
    }
    p.a.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!p.a || ::connect(p.a.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ADD_FAILURE() << "connect: " << std::strerror(errno);
        return p;
    }
    p.b.reset(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!p.b) ADD_FAILURE() << "accept: " << std::strerror(errno);
    timeval tv{20, 0};
    for (int fd : {p.a.get(), p.b.get()}) {
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    return p;
}

// /proc/net/tls_stat as name → value ("TlsTxSw" → 3). Empty when the kernel has no kTLS.
inline std::map<std::string, long> tls_stat() {
    std::map<std::string, long> m;
    std::ifstream f("/proc/net/tls_stat");
    std::string name;
    long v = 0;
    while (f >> name >> v) m[name] = v;
    return m;
}

struct Param {
    config::TlsVersion version;
    config::Cipher cipher;
};

inline std::vector<Param> all_params() {
    std::vector<Param> v;
    for (auto ver : {config::TlsVersion::tls1_2, config::TlsVersion::tls1_3})
        for (auto c :
             {config::Cipher::aes_128_gcm, config::Cipher::aes_256_gcm, config::Cipher::chacha20_poly1305})
            v.push_back({ver, c});
    return v;
}

// "tls12_aes_128_gcm": gtest parameter names must be [A-Za-z0-9_].
inline std::string param_name(const testing::TestParamInfo<Param>& info) {
    std::string s = info.param.version == config::TlsVersion::tls1_2 ? "tls12_" : "tls13_";
    switch (info.param.cipher) {
        case config::Cipher::aes_128_gcm: return s + "aes_128_gcm";
        case config::Cipher::aes_256_gcm: return s + "aes_256_gcm";
        case config::Cipher::chacha20_poly1305: return s + "chacha20_poly1305";
    }
    return s;
}

// Fixed, made-up key material (no handshake), different per `fill` so that a test mixing up
// directions fails.
struct Keys {
    std::array<uint8_t, 32> key_buf{};
    std::array<uint8_t, 12> iv{};
    config::Cipher cipher;
    std::span<const uint8_t> key() const { return {key_buf.data(), crypto::ktls_key_size(cipher)}; }
};

inline Keys keys(config::Cipher c, uint8_t fill) {
    Keys k{.cipher = c};
    for (size_t i = 0; i < k.key_buf.size(); ++i) k.key_buf[i] = static_cast<uint8_t>(fill * 3 + i);
    for (size_t i = 0; i < k.iv.size(); ++i) k.iv[i] = static_cast<uint8_t>(fill + 0x40 + i * 7);
    return k;
}

inline std::vector<uint8_t> pattern(size_t n, uint8_t seed = 0) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + i / 251 + seed);
    return v;
}

inline bool send_all(int fd, std::span<const uint8_t> data) {
    while (!data.empty()) {
        const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data = data.subspan(static_cast<size_t>(n));
    }
    return true;
}

// Reads one raw TLS record from a plain socket (header first, then exactly its length).
inline std::vector<uint8_t> read_raw_record(int fd) {
    std::vector<uint8_t> rec(5);
    size_t want = 5, got = 0;
    while (got < want) {
        const ssize_t n = ::recv(fd, rec.data() + got, want - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            ADD_FAILURE() << "raw record read: " << (n == 0 ? "EOF" : std::strerror(errno));
            return {};
        }
        got += static_cast<size_t>(n);
        if (want == 5 && got == 5) {
            want = 5 + (static_cast<size_t>(rec[3]) << 8 | rec[4]);
            rec.resize(want);
        }
    }
    return rec;
}

// errno of a failed Result, 0 when it succeeded (so a wrong success fails the comparison instead
// of throwing from error()).
template <typename R>
int err_code(const R& r) {
    return r.ok() ? 0 : r.error().code;
}

}  // namespace ztp::ktls_test
