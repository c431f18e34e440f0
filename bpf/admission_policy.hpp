// What admission enforces for one listener, and what it counted. Shared by the BPF loader
// (bpf/admission.hpp) and the user-space fallback (bpf/admission_fallback.hpp), which must agree:
//   - deny wins: an address matching any deny rule is refused;
//   - a non-empty allow list admits only addresses it contains; an empty one admits every address;
//   - rate_per_second > 0: each source address may start `burst` connections at once, then one
//     every 1/rate_per_second seconds (GCRA, i.e. a token bucket of `burst` tokens refilled at
//     `rate_per_second`); rate_per_second = 0 turns the limit off (burst must then be 0 too).
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

    bool empty() const { return allow.empty() && deny.empty() && rate_per_second == 0; }
};

struct AdmissionCounters {
    uint64_t admitted = 0;      // new connections let through
    uint64_t denied = 0;        // matched a deny rule
    uint64_t not_allowed = 0;   // outside a non-empty allow list
    uint64_t rate_limited = 0;  // over the per-source rate
    uint64_t unparsed = 0;      // kernel only: packets it could not parse (passed)
    // Index = position in AdmissionPolicy::deny; a SYN matching several deny rules is counted for
    // the longest prefix. Reset for the changed list by update().
    std::vector<uint64_t> per_deny_rule;

    uint64_t dropped() const { return denied + not_allowed + rate_limited; }
};

// EINVAL with a static reason when the policy cannot be enforced (rate without burst, too many
// rules). The config validator reports the same problems with file:line:col first.
Result<void> check_policy(const AdmissionPolicy& p);

}  // namespace ztp::bpf
