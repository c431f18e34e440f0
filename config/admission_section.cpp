#include "config/admission_section.hpp"

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
    r.check_keys(t, {"allow", "deny", "rate_per_second", "burst"}, kAdmission);
    cidrs(r, t, "allow", a.allow, a.allow_locs);
    cidrs(r, t, "deny", a.deny, a.deny_locs);
    auto count = [&](std::string_view key, uint32_t& out) {
        auto v = r.integer(t, key, kAdmission);
        if (!v) return;
        if (*v < 1 || *v > 1'000'000)
            r.error(t.get(key)->source(), "'" + std::string(key) + "' must be between 1 and 1000000");
        else
            out = static_cast<uint32_t>(*v);
    };
    count("rate_per_second", a.rate_per_second);
    count("burst", a.burst);
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
