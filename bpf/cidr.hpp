// Cidr: an IPv4 or IPv6 network ("10.0.0.0/8", "2001:db8::/32"), as written in [listener.admission]
// and on the command line (--allow/--deny). Pure: no libbpf, no sockets. It is built into its own
// library (ztp_cidr, defined in config/CMakeLists.txt) so the policy loader can use it without
// pulling in libbpf.
//
// IPv4 and IPv4-mapped IPv6 are one address space: 10.0.0.0/8 contains ::ffff:10.1.2.3, the way a
// dual-stack [::] listener reports IPv4 peers. The BPF programs use the same mapped form
// (bpf/ztp_bpf_shared.h), so user space and kernel agree on what a rule matches.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/base/socket_address.hpp"

namespace ztp::bpf {

// Per list (allow, deny) and listener: the size of the BPF tries (ZTP_ADMISSION_MAX_RULES).
inline constexpr size_t kMaxAdmissionRules = 1024;
// The rate limit's source grouping ([listener.admission] ipv6_rate_prefix / ipv4_rate_prefix):
// defaults and the ranges the config validator and check_policy() accept.
inline constexpr unsigned kDefaultIpv6RatePrefix = 64, kMinIpv6RatePrefix = 32, kMaxIpv6RatePrefix = 128;
inline constexpr unsigned kDefaultIpv4RatePrefix = 32, kMinIpv4RatePrefix = 16, kMaxIpv4RatePrefix = 32;

// 16 bytes, IPv4 as ::ffff:a.b.c.d. Empty for a SocketAddress that is neither IPv4 nor IPv6.
std::optional<std::array<uint8_t, 16>> mapped_address(const SocketAddress& a);

struct Cidr {
    int family = 0;                  // AF_INET or AF_INET6 (as written)
    std::array<uint8_t, 16> addr{};  // network address; IPv4 in the first 4 bytes
    unsigned prefix = 0;             // 0..32 for IPv4, 0..128 for IPv6

    // "10.0.0.0/8", "::1/128"; a bare address means one host (/32, /128). Errors (in *why), each
    // naming the text, so callers print them as they are (config, --allow/--deny):
    // "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?", "'10.0.0.0/33': prefix length 33
    // is out of range for IPv4 (0..32)", "'x' is not an IPv4 or IPv6 address".
    static std::optional<Cidr> parse(std::string_view text, std::string* why = nullptr);

    bool contains(const SocketAddress& a) const;
    bool contains_mapped(const std::array<uint8_t, 16>& mapped) const;
    // The network in the shared 16-byte form, and its prefix in that form (IPv4: 96 + prefix).
    std::array<uint8_t, 16> mapped() const;
    unsigned mapped_prefix() const { return family == AF_INET ? 96 + prefix : prefix; }
    std::string to_string() const;  // canonical: "10.0.0.0/8", "2001:db8::/32"

    bool operator==(const Cidr&) const = default;
};

}  // namespace ztp::bpf
