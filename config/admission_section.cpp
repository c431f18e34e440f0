#include "config/admission_section.hpp"

#include <string>
#include <type_traits>

namespace ztp::config::detail {

namespace {

constexpr std::string_view kAdmission = "[listener.admission]";

void cidrs(TomlReader& r, const toml::table& t, std::string_view key, std::vector<bpf::Cidr>& out,
           std::vector<SourceLoc>& locs) {
    auto items = r.strings(t, key, kAdmission);
    if (!items) return;
    for (const auto& item : *items) {
        std::string why;
        if (auto c = bpf::Cidr::parse(item.value, &why)) {
            out.push_back(*c);
            locs.push_back(r.loc(item.where));
        } else {
            r.error(item.where, why);  // names the text: "'10.0.0.1/8' has host bits set; ..."
        }
    }
}

}  // namespace

void read_admission(TomlReader& r, const toml::table& t, Admission& a) {
    a.loc = r.loc(t.source());
    r.check_keys(t, {"allow", "deny", "rate_per_second", "burst", "ipv6_rate_prefix", "ipv4_rate_prefix"},
                 kAdmission);
    cidrs(r, t, "allow", a.allow, a.allow_locs);
    cidrs(r, t, "deny", a.deny, a.deny_locs);
    auto in_range = [&](std::string_view key, int64_t lo, int64_t hi, auto& out) {
        auto v = r.integer(t, key, kAdmission);
        if (!v) return;
        if (*v < lo || *v > hi)
            r.error(t.get(key)->source(), "'" + std::string(key) + "' must be between " + std::to_string(lo) +
                                              " and " + std::to_string(hi));
        else
            out = static_cast<std::remove_reference_t<decltype(out)>>(*v);
    };
    in_range("rate_per_second", 1, 1'000'000, a.rate_per_second);
    in_range("burst", 1, 1'000'000, a.burst);
    in_range("ipv6_rate_prefix", bpf::kMinIpv6RatePrefix, bpf::kMaxIpv6RatePrefix, a.ipv6_rate_prefix);
    in_range("ipv4_rate_prefix", bpf::kMinIpv4RatePrefix, bpf::kMaxIpv4RatePrefix, a.ipv4_rate_prefix);
    // A prefix groups sources for the rate limit and does nothing else: without a rate it looks
    // like a limit that is not there. Said at the key rather than ignored.
    if (!t.contains("rate_per_second"))
        for (std::string_view key : {"ipv6_rate_prefix", "ipv4_rate_prefix"})
            if (t.contains(key))
                r.error(t.get(key)->source(), "'" + std::string(key) + "' needs 'rate_per_second' and 'burst' " +
                                                  "(it groups sources for the rate limit)");
    // A rate without a burst has no obvious default (1 refuses every parallel connection, the rate
    // itself surprises with bursts): ask for both.
    if (t.contains("rate_per_second") != t.contains("burst")) {
        const bool has_rate = t.contains("rate_per_second");
        r.error(t.get(has_rate ? "rate_per_second" : "burst")->source(),
                has_rate ? "'rate_per_second' needs 'burst' too (set both or neither)"
                         : "'burst' needs 'rate_per_second' too (set both or neither)");
        a.rate_per_second = a.burst = 0;
    }
}

}  // namespace ztp::config::detail
