// Process-wide redaction counters for /metrics: matches per rule and direction, and per direction
// the bytes the engine inspected, the bytes the proxy wrote (replacement segments) and the verified
// bytes it copied (0 by construction: the rewrite only references them). Counters are created when
// a rule set is compiled and live for the process, so a reload keeps a rule id's count going.
//
// THREADS: the counters are relaxed atomics bumped by worker threads; the registry's map is
// guarded by a mutex and only touched when a rule set is compiled or the metrics are rendered.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "config/policy.hpp"

namespace ztp::redact {

struct RuleMatches {
    std::atomic<uint64_t> count{0};
    // Pauses at which a possibly pending match of this rule was sent masked (on_pause = "mask").
    std::atomic<uint64_t> pause_masks{0};
};

struct DirectionTotals {
    std::atomic<uint64_t> bytes_inspected{0};
    std::atomic<uint64_t> replacement_bytes{0};
    std::atomic<uint64_t> verified_bytes_copied{0};
    std::atomic<uint64_t> late_matches{0};  // matches reaching into bytes a pause released in clear
};

// What one direction of one route reports into: the totals of its direction and one counter per
// rule, parallel to Database::rules().
struct StreamCounters {
    DirectionTotals* totals = nullptr;
    std::vector<std::shared_ptr<RuleMatches>> rules;
};

class RedactMetrics {
public:
    static RedactMetrics& process();

    // Only request and response: a rule of direction "both" is counted on the side that matched.
    std::shared_ptr<RuleMatches> rule(const std::string& id, config::RuleDirection direction);
    DirectionTotals& totals(config::RuleDirection direction);

    struct RuleRow {
        std::string id;
        config::RuleDirection direction;
        uint64_t matches;
        uint64_t pause_masks;
    };
    std::vector<RuleRow> rules() const;

private:
    mutable std::mutex mu_;
    std::map<std::pair<std::string, config::RuleDirection>, std::shared_ptr<RuleMatches>> rules_;
    DirectionTotals request_, response_;
};

}  // namespace ztp::redact
