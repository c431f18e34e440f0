// Semantic checks on a Policy model, however it was built. Positions come from the SourceLoc of
// the offending item (its table header when loaded from a file).
#include "config/policy_validate.hpp"

#include <exception>
#include <map>
#include <set>
#include <utility>

#include "config/process_section.hpp"
#include "config/redact_pattern.hpp"

namespace ztp::config {

namespace detail {

// Problems about the policy as a whole (e.g. no listener) point at the start of the file.
SourceLoc policy_loc(const Policy& p) {
    if (p.source.empty() || p.source.front() == '<') return {};
    return SourceLoc{p.source, 1, 1};
}

namespace {

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

class Checker {
public:
    Checker(const Policy& p, bool fields_checked) : p_(p), fields_checked_(fields_checked) {}

    std::vector<Diagnostic> run() {
        if (p_.listeners.empty() && !fields_checked_)
            add(policy_loc(p_), "no listener: at least one [[listener]] is required");
        for (size_t i = 0; i < p_.listeners.size(); ++i) check_listener(i);
        check_backends();
        check_rules();
        for (const auto& r : p_.routes) check_route_refs(r);
        for (const auto& r : p_.routes) check_route_rules(r);
        check_route_overlaps();
        check_reachability();
        if (!fields_checked_) check_process();
        return std::move(out_);
    }

private:
    void add(const SourceLoc& loc, std::string msg) { out_.push_back({loc, std::move(msg)}); }

    void check_listener(size_t i) {
        const Listener& l = p_.listeners[i];
        if (!fields_checked_) {
            if (l.name.empty()) add(l.loc, "listener has no name");
            if (l.address.family() == 0) add(l.loc, "listener " + in_quotes(l.name) + " has no address");
            if (l.tls.certificates.empty())
                add(l.loc, "listener " + in_quotes(l.name) + " has no certificate");
            if (l.tls.ciphers.empty()) add(l.tls.loc, "listener " + in_quotes(l.name) + " has no cipher");
            for (const auto& proto : l.tls.alpn)
                if (proto.empty() || proto.size() > 255)
                    add(l.tls.loc, "'alpn' entries must be 1 to 255 bytes long");
        }
        // The two knobs must not contradict each other: say so rather than pick one silently.
        if (l.tls.ktls == KtlsMode::off && l.tls.record_path == RecordPathMode::kernel)
            add(l.tls.loc, "listener " + in_quotes(l.name) + ": record_path \"kernel\" needs ktls \"auto\" or \"require\"");
        if (l.tls.ktls == KtlsMode::require &&
            (l.tls.record_path == RecordPathMode::userspace || l.tls.record_path == RecordPathMode::openssl))
            add(l.tls.loc, "listener " + in_quotes(l.name) + ": ktls \"require\" contradicts record_path \"" +
                               to_string(l.tls.record_path) + "\"");
        for (size_t j = 0; j < i; ++j) {
            const Listener& prev = p_.listeners[j];
            if (!l.name.empty() && l.name == prev.name)
                add(l.loc, "duplicate listener name " + in_quotes(l.name));
            // SO_REUSEPORT would let both bind and silently share the traffic. Port 0 is exempt:
            // each listener gets its own ephemeral port.
            if (l.address.family() != 0 && l.address.port() != 0 && l.address == prev.address)
                add(l.loc, "listener " + in_quotes(l.name) + " has the same address " +
                               l.address.to_string() + " as listener " + in_quotes(prev.name));
        }

        check_admission(l);
        check_client_auth(l);

        const TlsSettings& tls = l.tls;
        if (!fields_checked_ && tls.tls13_tickets > kMaxTls13Tickets)
            add(tls.loc, "listener " + in_quotes(l.name) + ": 'tls13_tickets' must be at most " +
                             std::to_string(kMaxTls13Tickets));
        std::set<std::string> cert_names;
        for (const auto& c : tls.certificates) {
            if (!fields_checked_) {
                if (c.name.empty())
                    add(c.loc, "certificate in listener " + in_quotes(l.name) + " has no name");
                if (c.cert_file.empty()) add(c.loc, "certificate " + in_quotes(c.name) + " has no cert file");
                if (c.key_file.empty()) add(c.loc, "certificate " + in_quotes(c.name) + " has no key file");
            }
            if (c.name.empty()) continue;
            if (!cert_names.insert(c.name).second)
                add(c.loc,
                    "duplicate certificate name " + in_quotes(c.name) + " in listener " + in_quotes(l.name));
        }
        if (tls.min_version == TlsVersion::tls1_3 && tls.max_version == TlsVersion::tls1_2)
            add(tls.loc, "'min_version' 1.3 is greater than 'max_version' 1.2");
        if (!tls.default_certificate.empty() && !cert_names.count(tls.default_certificate))
            add(tls.loc,
                "'default_certificate' names unknown certificate " + in_quotes(tls.default_certificate));
    }

    // Contradicting mTLS settings are errors, never silently resolved: a CA bundle next to
    // client_auth "none" looks like protection that is not there.
    void check_client_auth(const Listener& l) {
        const TlsSettings& tls = l.tls;
        const bool ca_from_file = !tls.client_ca_loc.file.empty();
        if (tls.client_auth != ClientAuth::none && tls.client_ca.empty())
            add(tls.loc, "listener " + in_quotes(l.name) + ": client_auth \"" + to_string(tls.client_auth) +
                             "\" needs 'client_ca' (the CA bundle that signs client certificates)");
        if (tls.client_auth == ClientAuth::none && !tls.client_ca.empty())
            add(ca_from_file ? tls.client_ca_loc : tls.loc,
                "listener " + in_quotes(l.name) +
                    ": 'client_ca' is set but client_auth is \"none\" (set \"optional\" or \"require\")");
        if (!fields_checked_ && tls.verify_depth > kMaxVerifyDepth)
            add(tls.loc, "listener " + in_quotes(l.name) + ": 'verify_depth' must be at most " +
                             std::to_string(kMaxVerifyDepth));
    }

    // Can this rule match an IPv4 peer (an IPv4 rule, or an IPv6 rule overlapping ::ffff:0:0/96)?
    static bool matches_ipv4(const bpf::Cidr& c) {
        if (c.family == AF_INET) return true;
        static const bpf::Cidr mapped = *bpf::Cidr::parse("::ffff:0.0.0.0/96");
        std::array<uint8_t, 16> probe = c.prefix <= 96 ? mapped.addr : c.addr;
        return c.prefix <= 96 ? c.contains_mapped(probe) : mapped.contains_mapped(probe);
    }

    void check_admission(const Listener& l) {
        const Admission& a = l.admission;
        if (!fields_checked_) {  // the loader reports these at the key
            if ((a.rate_per_second == 0) != (a.burst == 0))
                add(a.loc, "listener " + in_quotes(l.name) +
                               ": admission 'rate_per_second' and 'burst' must be set together");
            if (a.rate_per_second > 1'000'000 || a.burst > 1'000'000)
                add(a.loc, "listener " + in_quotes(l.name) +
                               ": admission 'rate_per_second' and 'burst' must be at most 1000000");
            const struct {
                const char* key;
                unsigned value, lo, hi;
            } prefixes[] = {{"ipv6_rate_prefix", a.ipv6_rate_prefix, bpf::kMinIpv6RatePrefix, bpf::kMaxIpv6RatePrefix},
                            {"ipv4_rate_prefix", a.ipv4_rate_prefix, bpf::kMinIpv4RatePrefix, bpf::kMaxIpv4RatePrefix}};
            for (const auto& pr : prefixes)
                if (pr.value < pr.lo || pr.value > pr.hi)
                    add(a.loc, "listener " + in_quotes(l.name) + ": admission " + in_quotes(pr.key) +
                                   " must be between " + std::to_string(pr.lo) + " and " + std::to_string(pr.hi));
        }
        struct List {
            const char* key;
            const std::vector<bpf::Cidr>& rules;
            const std::vector<SourceLoc>& locs;
        };
        const List lists[] = {{"allow", a.allow, a.allow_locs}, {"deny", a.deny, a.deny_locs}};
        const bool ipv4_only = l.address.family() == AF_INET;
        for (const List& list : lists) {
            auto at = [&](size_t i) -> const SourceLoc& { return i < list.locs.size() ? list.locs[i] : a.loc; };
            if (list.rules.size() > bpf::kMaxAdmissionRules)
                add(a.loc, "listener " + in_quotes(l.name) + ": more than " +
                               std::to_string(bpf::kMaxAdmissionRules) + " " + in_quotes(list.key) + " entries");
            for (size_t i = 0; i < list.rules.size(); ++i) {
                const bpf::Cidr& c = list.rules[i];
                bool dup = false;
                for (size_t j = 0; j < i && !dup; ++j) dup = list.rules[j] == c;
                if (dup) add(at(i), in_quotes(c.to_string()) + " is listed twice in " + in_quotes(list.key));
                if (ipv4_only && !matches_ipv4(c))
                    add(at(i), in_quotes(c.to_string()) + " never matches: listener " + in_quotes(l.name) +
                                   " accepts IPv4 only");
            }
        }
        for (size_t i = 0; i < a.allow.size(); ++i)
            for (const auto& d : a.deny)
                if (d == a.allow[i]) {
                    add(i < a.allow_locs.size() ? a.allow_locs[i] : a.loc,
                        in_quotes(d.to_string()) + " is in both 'allow' and 'deny' (deny wins)");
                    break;
                }
    }

    void check_backends() {
        std::set<std::string> names;
        for (const auto& b : p_.backends) {
            if (!fields_checked_) {
                if (b.name.empty()) add(b.loc, "backend has no name");
                if (b.addresses.empty()) add(b.loc, "backend " + in_quotes(b.name) + " has no address");
            }
            if (!b.name.empty() && !names.insert(b.name).second)
                add(b.loc, "duplicate backend name " + in_quotes(b.name));
        }
    }

    // Each rule is compiled by the engine here, once per load: a pattern `check` accepts is one
    // `run` can compile. Errors point at the pattern value (the rule header when built in code).
    void check_rules() {
        std::set<std::string> ids;
        for (const auto& rule : p_.rules) {
            if (rule.id.empty()) {
                if (!fields_checked_) add(rule.loc, "rule has no id");
            } else if (!ids.insert(rule.id).second) {
                add(rule.loc, "duplicate rule id " + in_quotes(rule.id));
            }
            const SourceLoc& at = rule.pattern_loc.line != 0 || !rule.pattern_loc.file.empty()
                                      ? rule.pattern_loc : rule.loc;
            // The loader already said "needs 'pattern' or 'literal'" at the header.
            if (rule.pattern.empty() && fields_checked_ && rule.pattern_loc.line == 0) continue;
            std::string why;
            auto info = analyze_rule(rule, &why);
            if (!info) {
                add(at, rule.id.empty() ? why : "rule " + in_quotes(rule.id) + ": " + why);
                continue;
            }
            widths_[&rule] = *info;
        }
    }

    // Does this rule's replacement change the stream's length? A mask never does; a fixed string
    // does unless every match has exactly its length. Unknown (pattern did not compile) = no.
    bool changes_length(const RedactRule& rule) const {
        if (!rule.replacement) return false;
        auto it = widths_.find(&rule);
        if (it == widths_.end()) return false;
        return it->second.min_width != it->second.max_width ||
               it->second.max_width != rule.replacement->size();
    }

    void check_route_rules(const Route& r) {
        std::set<std::string> seen;
        for (size_t i = 0; i < r.rules.size(); ++i) {
            const std::string& id = r.rules[i];
            const SourceLoc& at = i < r.rule_locs.size() ? r.rule_locs[i] : r.loc;
            const RedactRule* rule = p_.find_rule(id);
            bool unnamed = false;
            for (const auto& x : p_.rules) unnamed |= x.id.empty();
            if (!rule) {
                if (!unnamed) add(at, "route references unknown rule " + in_quotes(id));
                continue;
            }
            if (!seen.insert(id).second) {
                add(at, "rule " + in_quotes(id) + " is listed twice");
                continue;
            }
            if (!r.allow_length_change && changes_length(*rule))
                add(at, "rule " + in_quotes(id) +
                            " has a replacement whose length differs from its matches; set "
                            "allow_length_change = true on this route");
        }
    }

    // An item whose name could not be read (already reported) might be the one a route means, so
    // its presence suppresses "unknown ..." follow-on errors.
    bool listener_known(const std::string& name) const {
        for (const auto& l : p_.listeners)
            if (l.name == name || l.name.empty()) return true;
        return false;
    }

    bool backend_known(const std::string& name) const {
        for (const auto& b : p_.backends)
            if (b.name == name || b.name.empty()) return true;
        return false;
    }

    void check_route_refs(const Route& r) {
        if (r.backend.empty()) {
            if (!fields_checked_) add(r.loc, "route has no backend");
        } else if (!backend_known(r.backend)) {
            add(r.loc, "route references unknown backend " + in_quotes(r.backend));
        }
        if (!r.listener.empty() && !listener_known(r.listener))
            add(r.loc, "route references unknown listener " + in_quotes(r.listener));
        if (r.is_default && !r.server_names.empty())
            add(r.loc, "route has both 'server_names' and 'default = true'; use one");
        else if (!r.is_default && r.server_names.empty())
            add(r.loc, "route needs 'server_names' or 'default = true'");
    }

    static bool applies(const Route& r, const Listener& l) {
        return r.listener.empty() || r.listener == l.name;
    }

    // A listener picks one backend per SNI value; two candidates would make the choice depend on
    // file order, so both overlaps are errors (reported once per offending route).
    void check_route_overlaps() {
        std::set<size_t> has_default;                     // listener index
        std::set<std::pair<size_t, std::string>> routed;  // (listener index, server name)
        for (const auto& r : p_.routes) {
            if (r.is_default) {
                for (size_t i = 0; i < p_.listeners.size(); ++i) {
                    if (!applies(r, p_.listeners[i])) continue;
                    if (!has_default.insert(i).second) {
                        add(r.loc,
                            "more than one default route for listener " + in_quotes(p_.listeners[i].name));
                        break;
                    }
                }
            }
            for (const auto& sn : r.server_names) {
                for (size_t i = 0; i < p_.listeners.size(); ++i) {
                    if (!applies(r, p_.listeners[i])) continue;
                    if (!routed.insert({i, sn}).second) {
                        add(r.loc, "server name " + in_quotes(sn) + " is routed twice on listener " +
                                       in_quotes(p_.listeners[i].name));
                        break;
                    }
                }
            }
        }
    }

    // The loader checks [process] at each key; this is for a Policy built in code.
    void check_process() {
        const Process& proc = p_.process;
        for (auto [key, value] : {std::pair{"user", &proc.user}, std::pair{"group", &proc.group}})
            if (!value->empty())
                if (auto why = identity_problem(key, *value); !why.empty()) add(proc.loc, why);
        if (!proc.group.empty() && proc.user.empty())
            add(proc.loc, "'group' needs 'user' (groups change only together with the user)");
    }

    void check_reachability() {
        for (const auto& l : p_.listeners) {
            if (l.name.empty()) continue;  // already reported; a route could not name it anyway
            bool reached = false;
            for (const auto& r : p_.routes)
                if (applies(r, l) && (r.is_default || !r.server_names.empty())) reached = true;
            if (!reached) add(l.loc, "listener " + in_quotes(l.name) + " has no route");
        }
    }

    const Policy& p_;
    bool fields_checked_;
    std::vector<Diagnostic> out_;
    std::map<const RedactRule*, PatternInfo> widths_;
};

}  // namespace

std::vector<Diagnostic> validate(const Policy& policy, bool fields_checked) {
    return Checker(policy, fields_checked).run();
}

}  // namespace detail

std::vector<Diagnostic> validate_policy(const Policy& policy) {
    try {
        return detail::validate(policy, false);
    } catch (const std::exception& e) {  // only allocation failures; nothing may escape the API
        std::string message = std::string("internal error while validating: ") + e.what();
        return {Diagnostic{detail::policy_loc(policy), std::move(message)}};
    }
}

}  // namespace ztp::config
