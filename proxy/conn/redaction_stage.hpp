// RedactionStage: one direction of a rule route. Plaintext chunks go in (read-only, never
// copied), a RewritePlan comes out: spans of the input plus replacement segments, ready for
// sendmsg. A direction without rules passes chunks through the same plan. Held-back bytes (a
// match may still be in progress) wait for more input; when the input pauses (the relay arms a
// QuietTimer after a read that drained its source and calls flush() if nothing arrived since), the
// route's on_pause decides what happens to them (config::OnPause, proxy/redact/rewriter.hpp):
// masked (the default), held until the match resolves, or released in clear.
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
    // The direction's rules of the route, with its on_pause and pause length.
    static Result<RedactionStage> open(const redact::RuleSet::RouteRules& rules, config::RuleDirection direction,
                                       redact::Scratch* scratch);

    bool rewrites() const { return rewriter_.has_value(); }
    Result<void> feed(redact::SharedBytes chunk, redact::RewritePlan& out);
    Result<void> finish(redact::RewritePlan& out);
    // The input paused: releases what the route's on_pause allows of the held bytes.
    Result<void> flush(redact::RewritePlan& out);
    uint64_t held() const { return rewriter_ ? rewriter_->held() : 0; }
    // How long the input must be quiet, with bytes held, to count as a pause.
    std::chrono::milliseconds pause() const { return pause_; }
    uint64_t replaced_bytes() const;

private:
    void log_late_matches();

    std::optional<redact::Rewriter> rewriter_;
    redact::Scratch* scratch_ = nullptr;
    config::OnPause on_pause_ = config::OnPause::mask;
    std::chrono::milliseconds pause_{20};
    config::RuleDirection direction_ = config::RuleDirection::request;
    uint64_t late_logged_ = 0;  // late matches already logged
};

// The pause timer of one direction: armed after a read that drained its source while bytes are
// held, for the stage's pause length; when it fires, the relay calls stage.flush() if no input
// arrived since it was armed.
class QuietTimer {
public:
    explicit QuietTimer(io::Op op) : op_(op) {}
    void arm(RelayHost& host, uint64_t feeds, const RedactionStage& stage);
    // On completion: true when the direction stayed quiet (flush now); false: input came, re-armed.
    bool fired(RelayHost& host, uint64_t feeds, const RedactionStage& stage);

private:
    io::Op op_;
    __kernel_timespec ts_{};
    bool armed_ = false;
    uint64_t feeds_when_armed_ = 0;
};

}  // namespace ztp::conn
