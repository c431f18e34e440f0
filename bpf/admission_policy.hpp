// What admission enforces for one listener, and what it counted. Shared by the BPF loader
// (bpf/admission.hpp) and the user-space fallback (bpf/admission_fallback.hpp), which must agree:
//   - deny wins: an address matching any deny rule is refused;
//   - a non-empty allow list admits only addresses it contains; an empty one admits every address;
//   - rate_per_second > 0: each source may start `burst` connections at once, then one every
//     1/rate_per_second seconds (GCRA, i.e. a token bucket of `burst` tokens refilled at
//     `rate_per_second`); rate_per_second = 0 turns the limit off (burst must then be 0 too).
//     A "source" is the address masked to ipv6_rate_prefix bits (IPv6) or ipv4_rate_prefix bits
//     (IPv4): every address of one IPv6 /64 shares one bucket by default (ztp_rate_key in
//     bpf/ztp_bpf_shared.h, used by both sides).
// Only new connections count (SYN without ACK in the kernel, accepted sockets in the fallback).
#pragma once

#include <cstdint>
#include <vector>

#include "bpf/cidr.hpp"
#include "proxy/base/result.hpp"

namespace ztp::bpf {

struct AdmissionPolicy {
    std::vector<Cidr> allow;     // empty = every address (subject to deny)
    std::vector<Cidr> deny;      // at most kMaxAdmissionRules each
    uint32_t rate_per_second = 0;  // 0 = no rate limit
    uint32_t burst = 0;            // >= 1 when rate_per_second > 0, else 0
    unsigned ipv6_rate_prefix = kDefaultIpv6RatePrefix;  // 32..128: rate bucket per IPv6 /N
    unsigned ipv4_rate_prefix = kDefaultIpv4RatePrefix;  // 16..32: rate bucket per IPv4 /N

    bool empty() const { return allow.empty() && deny.empty() && rate_per_second == 0; }
};

struct AdmissionCounters {
    uint64_t admitted = 0;      // new connections let through
    uint64_t denied = 0;        // matched a deny rule
    uint64_t not_allowed = 0;   // outside a non-empty allow list
    uint64_t rate_limited = 0;  // over the per-source rate
    // Dropped, never admitted unchecked (fail closed). Kernel: packets whose IP/TCP headers the
    // filter could not parse (SYN or not: it cannot tell). Fallback: peers without an IP address.
    uint64_t unparsed = 0;
    // Index = position in AdmissionPolicy::deny; a SYN matching several deny rules is counted for
    // the longest prefix. Reset for the changed list by update().
    std::vector<uint64_t> per_deny_rule;

    uint64_t dropped() const { return denied + not_allowed + rate_limited + unparsed; }
};

// EINVAL with a static reason when the policy cannot be enforced (rate without burst, too many
// rules, a rate prefix out of range). The config validator reports the same problems with file:line:col first.
Result<void> check_policy(const AdmissionPolicy& p);

}  // namespace ztp::bpf
