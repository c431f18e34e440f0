// RuleSet: the redaction rules of one policy, compiled once (at start and on reload) and shared
// read-only by every worker thread. One engine database per distinct (direction, ordered rule list):
// routes naming the same rules in the same order share it.
//
// THREADS: a RuleSet and its Databases are immutable after compile() (hs_database_t is read-only
// during scans) and may be used from any thread. A Scratch is per worker thread: the engine uses it
// as working memory during a scan, so two threads must never scan with the same Scratch. Create one
// with RuleSet::make_scratch() per worker (or clone() one).
#pragma once

#include <hs.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/policy.hpp"
#include "proxy/base/result.hpp"
#include "proxy/redact/partial_matcher.hpp"
#include "proxy/redact/redact_metrics.hpp"

namespace ztp::redact {

struct HsDatabaseFree {
    void operator()(hs_database_t* d) const { hs_free_database(d); }
};
struct HsScratchFree {
    void operator()(hs_scratch_t* s) const { hs_free_scratch(s); }
};
using HsDatabasePtr = std::unique_ptr<hs_database_t, HsDatabaseFree>;
using HsScratchPtr = std::unique_ptr<hs_scratch_t, HsScratchFree>;

// A rule as the rewriter applies it. Index in Database::rules() = engine pattern id = priority
// (lower wins where matches of two rules cover the same byte).
struct CompiledRule {
    enum class Action {
        overlay,  // same length: each covered byte becomes the mask, or the replacement's byte at
                  // the same offset (a replacement exactly as long as every match)
        replace,  // each run of overlapping matches becomes one copy of the replacement
    };
    std::string id;
    Action action = Action::overlay;
    char mask = '*';
    std::string replacement;   // overlay: empty = mask; else the fill (length == width)
    unsigned width = 0;        // max_width from the engine (== min_width for fixed-width overlays)
    unsigned hold_back = 0;    // config::redact_hold_back()
    std::shared_ptr<const PartialMatcher> partial;  // at a pause: where a pending match could start
};

class Database {
public:
    const hs_database_t* get() const { return db_.get(); }
    const std::vector<CompiledRule>& rules() const { return rules_; }
    // Bytes of the stream's tail that may not be released yet: max over rules of hold_back.
    size_t hold_back() const { return hold_back_; }
    bool has_replace() const { return has_replace_; }
    bool changes_length() const { return has_replace_; }

    // Compiles rules (already validated) into one stream-mode database. *why: the engine's words.
    static Result<std::shared_ptr<const Database>> compile(const std::vector<const config::RedactRule*>& rules,
                                                           std::string* why);

private:
    HsDatabasePtr db_;
    std::vector<CompiledRule> rules_;
    size_t hold_back_ = 0;
    bool has_replace_ = false;
};

class RuleSet;

class Scratch {
public:
    Scratch() = default;
    hs_scratch_t* get() const { return s_.get(); }
    bool valid() const { return s_ != nullptr; }
    // A scratch for another worker thread, valid for the same databases.
    Result<Scratch> clone() const;

    // Grows this scratch so it can scan `db` too (hs_alloc_scratch accepts an existing scratch).
    Result<void> grow_for(const Database& db);

private:
    HsScratchPtr s_;
};

class RuleSet {
public:
    struct RouteRules {
        std::shared_ptr<const Database> request;   // client → backend; null = nothing to redact
        std::shared_ptr<const Database> response;  // backend → client
        // Where each direction's rewriter counts matches and bytes (null with no database).
        std::shared_ptr<const StreamCounters> request_counters;
        std::shared_ptr<const StreamCounters> response_counters;
        config::OnPause on_pause = config::OnPause::mask;  // the route's, for both directions
        std::chrono::milliseconds pause{20};
        bool any() const { return request || response; }
    };

    // Compiles the rules of every route of a validated policy. Errors only when the engine refuses
    // what validation accepted (or memory runs out); *why says which rule.
    static Result<std::shared_ptr<const RuleSet>> compile(const config::Policy& policy, std::string* why);

    // By index into policy.routes; routes without rules give an empty RouteRules.
    const RouteRules& route(size_t index) const;
    size_t distinct_databases() const { return databases_.size(); }

    // Scratch sized for every database of this set: one per worker thread.
    Result<Scratch> make_scratch() const;
    // Makes an existing scratch valid for this set's databases too (a reload: connections on the
    // old rule set keep using the same per-worker scratch).
    Result<void> grow_scratch(Scratch& s) const;

private:
    std::vector<RouteRules> routes_;
    std::vector<std::shared_ptr<const Database>> databases_;
};

// The rules a route applies in one direction, in priority order (what RuleSet::compile uses).
std::vector<const config::RedactRule*> route_rules(const config::Policy& policy, const config::Route& route,
                                                   config::RuleDirection direction);

// For `ztproxy check`: one line per route that has rules, e.g.
//   route 'default' (listener 'public'): rules card-number (request), bearer (both) → rewrite relay, no splice;
//   on pause (20ms): mask
std::vector<std::string> describe_routes(const config::Policy& policy);

// Quick mode (--redact-request REGEX / --redact-response REGEX): rules with ids "request-1",
// "response-1"..., mask '*'. Append them to policy.rules and their ids to the route's rules; then
// validate_policy() checks the patterns like a file's.
std::vector<config::RedactRule> quick_rules(const std::vector<std::string>& request_patterns,
                                            const std::vector<std::string>& response_patterns);

}  // namespace ztp::redact
