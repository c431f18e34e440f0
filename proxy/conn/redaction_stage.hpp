// RedactionStage: one direction of a rule route. Plaintext chunks go in (read-only, never
// copied), a RewritePlan comes out: spans of the input plus replacement segments, ready for
// sendmsg. A direction without rules passes chunks through the same plan. Held-back bytes (a
// match may still be in progress) are released when the input goes quiet: the relay arms
// kQuietFlush after a read that drained its source and calls flush() if nothing arrived since.
#pragma once

#include <chrono>
#include <memory>
#include <optional>

#include "proxy/conn/relay.hpp"
#include "proxy/redact/rewrite_plan.hpp"
#include "proxy/redact/rewriter.hpp"
#include "proxy/redact/rule_set.hpp"

namespace ztp::conn {

class RedactionStage {
public:
    // How long a direction may sit on held-back bytes with no new input before they are sent.
    // A secret that arrives split by a longer pause is redacted only from the pause on, and the
    // rewriter counts it (late matches); a shorter one would cut more secrets, a longer one
    // delays every request whose tail could start a match.
    static constexpr std::chrono::milliseconds kQuietFlush{20};

    static Result<RedactionStage> open(std::shared_ptr<const redact::Database> db,
                                       std::shared_ptr<const redact::StreamCounters> counters,
                                       redact::Scratch* scratch);

    bool rewrites() const { return rewriter_.has_value(); }
    Result<void> feed(redact::SharedBytes chunk, redact::RewritePlan& out);
    Result<void> finish(redact::RewritePlan& out);
    Result<void> flush(redact::RewritePlan& out);
    uint64_t held() const { return rewriter_ ? rewriter_->held() : 0; }
    uint64_t replaced_bytes() const;

private:
    std::optional<redact::Rewriter> rewriter_;
    redact::Scratch* scratch_ = nullptr;
};

// The held-back flush timer of one direction: armed after a read that drained its source while
// bytes are held; when it fires, the relay flushes if no input arrived since it was armed.
class QuietTimer {
public:
    explicit QuietTimer(io::Op op) : op_(op) {}
    void arm(RelayHost& host, uint64_t feeds, uint64_t held);
    // On completion: true when the direction stayed quiet (flush now); false: input came, re-armed.
    bool fired(RelayHost& host, uint64_t feeds, uint64_t held);

private:
    io::Op op_;
    __kernel_timespec ts_{};
    bool armed_ = false;
    uint64_t feeds_when_armed_ = 0;
};

}  // namespace ztp::conn
