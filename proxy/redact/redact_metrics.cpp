#include "proxy/redact/redact_metrics.hpp"

namespace ztp::redact {

RedactMetrics& RedactMetrics::process() {
    static RedactMetrics m;
    return m;
}

std::shared_ptr<RuleMatches> RedactMetrics::rule(const std::string& id, config::RuleDirection direction) {
    std::lock_guard lock(mu_);
    auto& slot = rules_[{id, direction}];
    if (!slot) slot = std::make_shared<RuleMatches>();
    return slot;
}

DirectionTotals& RedactMetrics::totals(config::RuleDirection direction) {
    return direction == config::RuleDirection::response ? response_ : request_;
}

std::vector<RedactMetrics::RuleRow> RedactMetrics::rules() const {
    std::lock_guard lock(mu_);
    std::vector<RuleRow> rows;
    rows.reserve(rules_.size());
    for (const auto& [key, counter] : rules_)
        rows.push_back({key.first, key.second, counter->count.load(std::memory_order_relaxed),
                        counter->pause_masks.load(std::memory_order_relaxed)});
    return rows;
}

}  // namespace ztp::redact
