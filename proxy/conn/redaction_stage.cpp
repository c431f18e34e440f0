#include "proxy/conn/redaction_stage.hpp"

#include "proxy/base/log.hpp"
#include "proxy/base/log_limiter.hpp"

namespace ztp::conn {

Result<RedactionStage> RedactionStage::open(const redact::RuleSet::RouteRules& rules, config::RuleDirection direction,
                                            redact::Scratch* scratch) {
    RedactionStage s;
    const bool up = direction == config::RuleDirection::request;
    auto db = up ? rules.request : rules.response;
    if (!db) return s;
    auto r = redact::Rewriter::open(std::move(db), up ? rules.request_counters : rules.response_counters);
    if (!r) return r.error();
    s.rewriter_.emplace(std::move(r).value());
    s.scratch_ = scratch;
    s.on_pause_ = rules.on_pause;
    s.pause_ = rules.pause;
    s.direction_ = direction;
    return s;
}

Result<void> RedactionStage::feed(redact::SharedBytes chunk, redact::RewritePlan& out) {
    if (!rewriter_) {
        out.pass_through(std::move(chunk));
        return {};
    }
    auto r = rewriter_->feed(std::move(chunk), *scratch_, out);
    log_late_matches();
    return r;
}

Result<void> RedactionStage::finish(redact::RewritePlan& out) {
    if (!rewriter_) return {};
    auto r = rewriter_->finish(*scratch_, out);
    log_late_matches();
    return r;
}

Result<void> RedactionStage::flush(redact::RewritePlan& out) {
    if (!rewriter_) return {};
    return rewriter_->pause(on_pause_, out);
}

uint64_t RedactionStage::replaced_bytes() const {
    return rewriter_ ? rewriter_->stats().replacement_bytes : 0;
}

// on_pause = "release" let bytes of a match go out in clear: say so (counts only, never payload),
// rate-limited per worker thread because a peer can pause at will.
void RedactionStage::log_late_matches() {
    const redact::RedactStats& st = rewriter_->stats();
    if (st.late_matches == late_logged_) return;
    const uint64_t fresh = st.late_matches - late_logged_;
    late_logged_ = st.late_matches;
    thread_local log::LogLimiter limiter(10);
    auto suppressed = limiter.allow(log::LogLimiter::Clock::now());
    if (!suppressed) return;
    log::conn().warn("redaction ({}): {} match(es) completed after a pause had released their first bytes in "
                     "clear (on_pause = release; {} bytes in clear on this stream so far; {} similar lines "
                     "suppressed)",
                     config::to_string(direction_), fresh, st.late_bytes, *suppressed);
}

void QuietTimer::arm(RelayHost& host, uint64_t feeds, const RedactionStage& stage) {
    if (armed_ || stage.held() == 0) return;
    armed_ = true;
    feeds_when_armed_ = feeds;
    auto ms = stage.pause().count();
    ts_ = {ms / 1000, (ms % 1000) * 1'000'000};
    host.op_submitted();
    host.loop().timeout(&op_, &ts_);
}

bool QuietTimer::fired(RelayHost& host, uint64_t feeds, const RedactionStage& stage) {
    armed_ = false;
    if (feeds == feeds_when_armed_) return true;
    arm(host, feeds, stage);
    return false;
}

}  // namespace ztp::conn
