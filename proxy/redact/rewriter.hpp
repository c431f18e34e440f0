// Rewriter: one direction of one connection. Feeds the stream to the engine, holds back the tail
// that a match still in progress could cover, and turns everything before it into a RewritePlan.
//
// ================================ SEMANTICS (chunking-invariant) =================================
// Let the engine's spans be every [from, to) reported for any rule (StreamMatcher: the union of
// these is the union of all substrings a rule matches). Each byte of the stream is then:
//   1. swallowed, if a `replace` rule's span covers it. A run of bytes held together by
//      OVERLAPPING replace spans (of any replace rules) becomes ONE copy of a replacement string:
//      that of the lowest-index (= first listed on the route) replace rule covering the run's first
//      byte. Adjacent, non-overlapping matches ("abab" with literal "ab") give one copy each.
//      For literals this is leftmost-longest non-overlapping replacement when occurrences do not
//      overlap; overlapping occurrences merge (nothing of a match may leak through a seam).
//   2. else, if `overlay` rules cover it: the first-listed such rule decides. A mask rule writes its
//      mask byte; a same-length replacement writes its string's byte at the same offset in the
//      covering match with the smallest start. Overlay output has the input's length.
//   3. else the byte passes untouched (a slice of the input; never copied).
// Replacement wins over masks where both cover a byte. All of this depends only on the whole
// stream, never on how it was split into chunks (tested).
//
// ===================================== HOLD-BACK =================================================
// A span is reported once its end is scanned (one byte later for trailing assertions, or at end of
// stream). After N bytes, a span not yet reported starts at >= N - hold_back, where hold_back is
// max over rules of max_width - 1 (+2 for trailing assertions: \b, \B, $, \Z). So the rewriter
// keeps at most hold_back bytes of the tail (as SharedBytes slices: referenced, never copied) and
// releases everything before. finish() (half-close) flushes the rest after the engine's end-of-stream
// matches.
//
// ===================================== PAUSES ====================================================
// A held tail is released only by more input, finish() or pause(). A request whose last bytes could
// begin a match waits for the next bytes; an interactive protocol needs the relay to call pause()
// when the peer goes quiet. Which held bytes a pending match could cover is asked of each rule's
// PartialMatcher: the smallest P >= fed - rule.hold_back, in the held bytes or in bytes the previous
// pause sent masked right before them, at which a match of the rule could start and not be complete
// yet. Held bytes before the smallest such P of all rules are decided as usual. From P on, by mode
// (config::OnPause):
//   mask     for each rule with a pending start P_r, the span [P_r, fed) is applied as if the engine
//            had reported it (a partial match at a pause counts as a match: fail closed), so the
//            rule's mask, fill or one replacement copy covers it; then the rest is released. When
//            the rest of the secret arrives, the engine reports the whole match, starting before
//            what was released: its unsent bytes are covered as usual, and the bytes the pause
//            masked do not count as late. The output depends only on the stream and on where the
//            pauses fell (stats: pause_masks, pause_masked_bytes).
//   hold     nothing from P on is released: it waits for more input (the match completes or dies)
//            or finish().
//   release  everything is released in clear; a match completed later can then only redact what
//            has not been sent yet. Such late matches are counted (late_matches, late_bytes).
// Without pause() late matches are 0 by construction.
// =================================================================================================
//
// ERRORS: feed/finish/pause fail only on ENOMEM (or EPIPE after finish); the stream state is then
// undefined: close the connection (count it), never retry with the same Rewriter.
//
// THREADS: one Rewriter belongs to one connection on one worker thread; the Scratch passed in is
// that worker's.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "proxy/base/result.hpp"
#include "proxy/redact/rewrite_plan.hpp"
#include "proxy/redact/redact_metrics.hpp"
#include "proxy/redact/rule_set.hpp"
#include "proxy/redact/shared_bytes.hpp"
#include "proxy/redact/stream_matcher.hpp"

namespace ztp::redact {

struct RedactStats {
    std::vector<uint64_t> matches;        // per rule (Database::rules() order): occurrences redacted
                                          // (overlapping spans of one rule count once)
    uint64_t bytes_inspected = 0;         // fed to the engine
    uint64_t bytes_redacted = 0;          // input bytes masked, overlaid or swallowed
    uint64_t replacement_bytes = 0;       // bytes the proxy wrote (mask runs, replacement strings)
    uint64_t verified_bytes_copied = 0;   // input bytes copied: 0 by construction (kept as a check)
    uint64_t held_bytes = 0;              // now: referenced, not yet released (not copied)
    uint64_t held_bytes_max = 0;
    uint64_t late_matches = 0;            // spans reaching into bytes released in clear by pause()
    uint64_t late_bytes = 0;              // ...and how many of their bytes had gone out unredacted
    uint64_t pause_masks = 0;             // pending matches sent masked at a pause (one per rule)
    uint64_t pause_masked_bytes = 0;      // held bytes those covered
};

class Rewriter {
public:
    Rewriter() = default;
    Rewriter(Rewriter&&) noexcept = default;
    Rewriter& operator=(Rewriter&&) noexcept = default;

    // `db` is kept alive by the rewriter (a reload may drop the RuleSet while connections live).
    // `counters` (optional; parallel to db->rules()) receive the process-wide counts as they happen.
    static Result<Rewriter> open(std::shared_ptr<const Database> db,
                                 std::shared_ptr<const StreamCounters> counters = nullptr);

    // The next bytes of the stream, in order. Appends what can be released to `out`.
    Result<void> feed(SharedBytes chunk, Scratch& scratch, RewritePlan& out);
    // End of stream (half-close): the engine's pending matches, then every held byte.
    Result<void> finish(Scratch& scratch, RewritePlan& out);
    // The input paused: release what `mode` allows of the held tail (see PAUSES above).
    Result<void> pause(config::OnPause mode, RewritePlan& out);

    uint64_t held() const { return fed_ - decided_; }
    uint64_t offset() const { return fed_; }
    bool finished() const { return finished_; }
    const RedactStats& stats() const { return stats_; }
    const Database& database() const { return *db_; }

private:
    struct RuleState {
        uint64_t cover_end = 0;       // max `to` over this rule's activated spans
        std::deque<uint64_t> starts;  // fixed-width overlay with a fill: activated span starts
    };

    void absorb_fresh();
    void activate(const Match& m);
    void decide(uint64_t limit, RewritePlan& out);
    void take(uint64_t n, RewritePlan* out);  // moves n held bytes out (into `out` when given)
    void emit_run(RewritePlan& out);
    void publish();  // adds what stats_ gained since the last call to counters_->totals
    uint64_t pending_from(config::OnPause mode);  // see PAUSES; queues the mask spans in fresh_
    uint64_t unmasked(uint64_t from, uint64_t to) const;  // bytes of [from, to) no pause masked

    std::shared_ptr<const Database> db_;
    StreamMatcher matcher_;
    std::deque<SharedBytes> held_;  // covers [decided_, fed_), in stream order
    uint64_t fed_ = 0;
    uint64_t decided_ = 0;
    std::vector<Match> fresh_;      // from the engine since the last decide()
    std::vector<Match> pending_;    // sorted by (from, rule); not yet activated (from >= decided_)
    size_t pending_pos_ = 0;
    std::vector<RuleState> rules_;
    uint64_t cover_max_ = 0;        // max cover_end over all rules
    uint64_t replace_reach_ = 0;    // max cover_end over replace rules
    bool last_swallowed_ = false;   // the byte before decided_ was swallowed by a replacement
    bool has_last_byte_ = false;    // last_byte_: the input byte before decided_ (context for \b)
    uint8_t last_byte_ = 0;
    // Stream ranges pause() released masked, in order, merged; only those a span reported later
    // could still reach (to > fed_ - hold_back) are kept.
    std::deque<std::pair<uint64_t, uint64_t>> pause_masked_;
    // The input bytes [recent_from_, recent_from_ + size) the last mask pause sent masked (at most
    // hold_back), and the byte before them: where a match still pending could have started.
    std::string recent_;
    uint64_t recent_from_ = 0;
    bool recent_has_context_ = false;
    uint8_t recent_context_ = 0;
    bool finished_ = false;
    std::string run_;               // replacement bytes of the current covered run (reused)
    bool run_all_stars_ = true;
    RedactStats stats_;
    std::shared_ptr<const StreamCounters> counters_;
    RedactStats published_;  // the scalar part of stats_ as of the last publish()
};

}  // namespace ztp::redact
