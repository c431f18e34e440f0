#include "proxy/redact/rule_set.hpp"

#include <algorithm>
#include <exception>
#include <map>

#include "config/redact_pattern.hpp"

namespace ztp::redact {

namespace {

bool applies(const config::RedactRule& rule, config::RuleDirection direction) {
    return rule.direction == config::RuleDirection::both || rule.direction == direction;
}

std::string q(std::string_view s) { return "'" + std::string(s) + "'"; }

}  // namespace

std::vector<const config::RedactRule*> route_rules(const config::Policy& policy, const config::Route& route,
                                                   config::RuleDirection direction) {
    std::vector<const config::RedactRule*> out;
    for (const auto& id : route.rules) {
        const config::RedactRule* rule = policy.find_rule(id);
        if (rule && applies(*rule, direction) && std::find(out.begin(), out.end(), rule) == out.end())
            out.push_back(rule);
    }
    return out;
}

Result<std::shared_ptr<const Database>> Database::compile(const std::vector<const config::RedactRule*>& rules,
                                                          std::string* why) {
    try {
        auto db = std::make_shared<Database>();
        std::vector<std::string> exprs;
        std::vector<const char*> ptrs;
        std::vector<unsigned> flags, ids;
        for (const config::RedactRule* rule : rules) {
            std::string err;
            auto info = config::analyze_rule(*rule, &err);
            if (!info) {
                *why = "rule " + q(rule->id) + ": " + err;
                return Error{EINVAL, "redaction rule rejected by the engine"};
            }
            CompiledRule c;
            c.id = rule->id;
            c.mask = rule->mask;
            c.width = info->max_width;
            c.hold_back = config::redact_hold_back(*info);
            c.partial = std::make_shared<const PartialMatcher>(*rule);
            if (rule->replacement) {
                bool same_length = info->min_width == info->max_width &&
                                   info->max_width == rule->replacement->size();
                c.action = same_length ? CompiledRule::Action::overlay : CompiledRule::Action::replace;
                c.replacement = *rule->replacement;
                db->has_replace_ |= !same_length;
            }
            db->hold_back_ = std::max<size_t>(db->hold_back_, c.hold_back);
            ids.push_back(static_cast<unsigned>(db->rules_.size()));
            db->rules_.push_back(std::move(c));
            exprs.push_back(config::redact_expression(*rule));
            flags.push_back(config::redact_flags(*rule));
        }
        for (const auto& e : exprs) ptrs.push_back(e.c_str());
        hs_database_t* raw = nullptr;
        hs_compile_error_t* err = nullptr;
        if (hs_compile_multi(ptrs.data(), flags.data(), ids.data(), static_cast<unsigned>(ptrs.size()),
                             config::redact_mode(), nullptr, &raw, &err) != HS_SUCCESS) {
            *why = err && err->message ? err->message : "compile failed";
            if (err && err->expression >= 0 && static_cast<size_t>(err->expression) < rules.size())
                *why = "rule " + q(rules[err->expression]->id) + ": " + *why;
            hs_free_compile_error(err);
            return Error{EINVAL, "redaction rules rejected by the engine"};
        }
        db->db_.reset(raw);
        return std::shared_ptr<const Database>(std::move(db));
    } catch (const std::bad_alloc&) {
        return Error{ENOMEM, "compiling redaction rules"};
    }
}

Result<void> Scratch::grow_for(const Database& db) {
    hs_scratch_t* s = s_.release();
    hs_error_t rc = hs_alloc_scratch(db.get(), &s);
    s_.reset(s);  // on failure hs_alloc_scratch leaves the old scratch untouched (or null)
    if (rc != HS_SUCCESS) return Error{rc == HS_NOMEM ? ENOMEM : EINVAL, "hs_alloc_scratch"};
    return {};
}

Result<Scratch> Scratch::clone() const {
    Scratch out;
    if (!s_) return out;
    hs_scratch_t* s = nullptr;
    if (hs_clone_scratch(s_.get(), &s) != HS_SUCCESS) return Error{ENOMEM, "hs_clone_scratch"};
    out.s_.reset(s);
    return out;
}

namespace {

std::shared_ptr<const StreamCounters> stream_counters(const Database* db, config::RuleDirection direction) {
    if (!db) return nullptr;
    auto& metrics = RedactMetrics::process();
    auto c = std::make_shared<StreamCounters>();
    c->totals = &metrics.totals(direction);
    for (const CompiledRule& rule : db->rules()) c->rules.push_back(metrics.rule(rule.id, direction));
    return c;
}

}  // namespace

Result<std::shared_ptr<const RuleSet>> RuleSet::compile(const config::Policy& policy, std::string* why) {
    try {
        auto set = std::make_shared<RuleSet>();
        // Key: the ordered rule ids; identical lists (same direction filter result) share a database.
        std::map<std::vector<std::string>, std::shared_ptr<const Database>> cache;
        auto get = [&](const std::vector<const config::RedactRule*>& rules)
            -> Result<std::shared_ptr<const Database>> {
            if (rules.empty()) return std::shared_ptr<const Database>();
            std::vector<std::string> key;
            for (auto* r : rules) key.push_back(r->id);
            if (auto it = cache.find(key); it != cache.end()) return it->second;
            auto db = Database::compile(rules, why);
            if (!db) return db.error();
            cache.emplace(std::move(key), *db);
            set->databases_.push_back(*db);
            return *db;
        };
        for (const auto& route : policy.routes) {
            RouteRules rr;
            auto req = get(route_rules(policy, route, config::RuleDirection::request));
            if (!req) return req.error();
            auto resp = get(route_rules(policy, route, config::RuleDirection::response));
            if (!resp) return resp.error();
            rr.request = *req;
            rr.response = *resp;
            rr.request_counters = stream_counters(rr.request.get(), config::RuleDirection::request);
            rr.response_counters = stream_counters(rr.response.get(), config::RuleDirection::response);
            rr.on_pause = route.on_pause;
            rr.pause = route.pause;
            set->routes_.push_back(std::move(rr));
        }
        return std::shared_ptr<const RuleSet>(std::move(set));
    } catch (const std::bad_alloc&) {
        return Error{ENOMEM, "compiling redaction rules"};
    }
}

const RuleSet::RouteRules& RuleSet::route(size_t index) const {
    static const RouteRules none;
    return index < routes_.size() ? routes_[index] : none;
}

Result<void> RuleSet::grow_scratch(Scratch& s) const {
    for (const auto& db : databases_)
        if (auto r = s.grow_for(*db); !r) return r.error();
    return {};
}

Result<Scratch> RuleSet::make_scratch() const {
    Scratch s;
    if (auto r = grow_scratch(s); !r) return r.error();
    return s;
}

std::vector<std::string> describe_routes(const config::Policy& policy) {
    std::vector<std::string> out;
    for (const auto& route : policy.routes) {
        if (route.rules.empty()) continue;
        std::string line = "route ";
        if (route.is_default) {
            line += "'default'";
        } else {
            line += "'";
            for (size_t i = 0; i < route.server_names.size(); ++i)
                line += (i ? ", " : "") + route.server_names[i];
            line += "'";
        }
        line += route.listener.empty() ? " (every listener)" : " (listener " + q(route.listener) + ")";
        line += ": rules ";
        bool length_change = false;
        for (size_t i = 0; i < route.rules.size(); ++i) {
            const config::RedactRule* rule = policy.find_rule(route.rules[i]);
            line += (i ? ", " : "") + route.rules[i];
            if (rule) {
                line += std::string(" (") + config::to_string(rule->direction) + ")";
                if (rule->replacement) {
                    std::string why;
                    auto info = config::analyze_rule(*rule, &why);
                    length_change |= !info || info->min_width != info->max_width ||
                                     info->max_width != rule->replacement->size();
                }
            }
        }
        line += " → rewrite relay, no splice";
        if (route.allow_length_change && length_change) line += "; length may change";
        line += std::string("; on pause (") + std::to_string(route.pause.count()) + "ms): " +
                config::to_string(route.on_pause);
        out.push_back(std::move(line));
    }
    return out;
}

std::vector<config::RedactRule> quick_rules(const std::vector<std::string>& request_patterns,
                                            const std::vector<std::string>& response_patterns) {
    std::vector<config::RedactRule> out;
    auto add = [&](const std::vector<std::string>& patterns, config::RuleDirection d, const char* prefix) {
        for (size_t i = 0; i < patterns.size(); ++i) {
            config::RedactRule r;
            r.id = std::string(prefix) + "-" + std::to_string(i + 1);
            r.direction = d;
            r.pattern = patterns[i];
            out.push_back(std::move(r));
        }
    };
    add(request_patterns, config::RuleDirection::request, "request");
    add(response_patterns, config::RuleDirection::response, "response");
    return out;
}

}  // namespace ztp::redact
