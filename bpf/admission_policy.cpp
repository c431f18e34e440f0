#include "bpf/admission_policy.hpp"

#include <cerrno>

namespace ztp::bpf {

Result<void> check_policy(const AdmissionPolicy& p) {
    if ((p.rate_per_second == 0) != (p.burst == 0))
        return make_error(EINVAL, "admission policy: rate_per_second and burst must both be set or both be 0");
    if (p.allow.size() > kMaxAdmissionRules || p.deny.size() > kMaxAdmissionRules)
        return make_error(EINVAL, "admission policy: more than 1024 allow or deny rules");
    if (p.ipv6_rate_prefix < kMinIpv6RatePrefix || p.ipv6_rate_prefix > kMaxIpv6RatePrefix)
        return make_error(EINVAL, "admission policy: ipv6_rate_prefix must be between 32 and 128");
    if (p.ipv4_rate_prefix < kMinIpv4RatePrefix || p.ipv4_rate_prefix > kMaxIpv4RatePrefix)
        return make_error(EINVAL, "admission policy: ipv4_rate_prefix must be between 16 and 32");
    for (const auto* list : {&p.allow, &p.deny})
        for (const Cidr& c : *list)
            if (c.family != AF_INET && c.family != AF_INET6)
                return make_error(EINVAL, "admission policy: a rule is neither IPv4 nor IPv6");
    return ok_result();
}

}  // namespace ztp::bpf
