#include "proxy/conn/redaction_stage.hpp"

namespace ztp::conn {

Result<RedactionStage> RedactionStage::open(std::shared_ptr<const redact::Database> db,
                                            std::shared_ptr<const redact::StreamCounters> counters,
                                            redact::Scratch* scratch) {
    RedactionStage s;
    if (!db) return s;
    auto r = redact::Rewriter::open(std::move(db), std::move(counters));
    if (!r) return r.error();
    s.rewriter_.emplace(std::move(r).value());
    s.scratch_ = scratch;
    return s;
}

Result<void> RedactionStage::feed(redact::SharedBytes chunk, redact::RewritePlan& out) {
    if (!rewriter_) {
        out.pass_through(std::move(chunk));
        return {};
    }
    return rewriter_->feed(std::move(chunk), *scratch_, out);
}

Result<void> RedactionStage::finish(redact::RewritePlan& out) {
    if (!rewriter_) return {};
    return rewriter_->finish(*scratch_, out);
}

Result<void> RedactionStage::flush(redact::RewritePlan& out) {
    if (!rewriter_) return {};
    return rewriter_->flush(out);
}

uint64_t RedactionStage::replaced_bytes() const {
    return rewriter_ ? rewriter_->stats().replacement_bytes : 0;
}

void QuietTimer::arm(RelayHost& host, uint64_t feeds, uint64_t held) {
    if (armed_ || held == 0) return;
    armed_ = true;
    feeds_when_armed_ = feeds;
    auto ms = RedactionStage::kQuietFlush.count();
    ts_ = {ms / 1000, (ms % 1000) * 1'000'000};
    host.op_submitted();
    host.loop().timeout(&op_, &ts_);
}

bool QuietTimer::fired(RelayHost& host, uint64_t feeds, uint64_t held) {
    armed_ = false;
    if (feeds == feeds_when_armed_) return true;
    arm(host, feeds, held);
    return false;
}

}  // namespace ztp::conn
