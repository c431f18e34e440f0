#include "proxy/redact/rewriter.hpp"

#include <algorithm>
#include <array>
#include <new>

namespace ztp::redact {

namespace {

// Mask runs of the default '*' point here instead of being written per plan.
constexpr size_t kStarsLen = 4096;
const std::array<char, kStarsLen> kStars = [] {
    std::array<char, kStarsLen> a{};
    a.fill('*');
    return a;
}();

bool by_start(const Match& a, const Match& b) {
    return a.from != b.from ? a.from < b.from : a.rule < b.rule;
}

}  // namespace

Result<Rewriter> Rewriter::open(std::shared_ptr<const Database> db, std::shared_ptr<const StreamCounters> counters) {
    if (!db) return Error{EINVAL, "Rewriter::open without rules"};
    if (counters && counters->rules.size() != db->rules().size())
        return Error{EINVAL, "Rewriter::open: counters do not match the rules"};
    auto m = StreamMatcher::open(*db);
    if (!m) return m.error();
    try {
        Rewriter w;
        w.matcher_ = std::move(*m);
        w.rules_.resize(db->rules().size());
        w.stats_.matches.assign(db->rules().size(), 0);
        w.db_ = std::move(db);
        w.counters_ = std::move(counters);
        return w;
    } catch (const std::bad_alloc&) {
        return Error{ENOMEM, "Rewriter::open"};
    }
}

Result<void> Rewriter::feed(SharedBytes chunk, Scratch& scratch, RewritePlan& out) {
    if (finished_) return Error{EPIPE, "redaction stream already finished"};
    try {
        if (!chunk.empty()) {
            if (auto r = matcher_.feed(chunk.bytes(), scratch, fresh_); !r) return r;
            fed_ += chunk.size();
            stats_.bytes_inspected += chunk.size();
            held_.push_back(std::move(chunk));
        }
        const uint64_t hold = db_->hold_back();
        uint64_t limit = fed_ > hold ? fed_ - hold : 0;
        decide(std::max(limit, decided_), out);
        // decide() took this chunk's reports; the next ones start at >= fed_ - hold, so masked
        // ranges ending before that can no longer excuse a late span.
        while (!pause_masked_.empty() && pause_masked_.front().second + hold <= fed_) pause_masked_.pop_front();
        publish();
        return {};
    } catch (const std::bad_alloc&) {
        return Error{ENOMEM, "Rewriter::feed"};
    }
}

Result<void> Rewriter::finish(Scratch& scratch, RewritePlan& out) {
    if (finished_) return {};
    try {
        finished_ = true;
        if (auto r = matcher_.close(scratch, fresh_); !r) return r;
        decide(fed_, out);
        publish();
        return {};
    } catch (const std::bad_alloc&) {
        return Error{ENOMEM, "Rewriter::finish"};
    }
}

Result<void> Rewriter::pause(config::OnPause mode, RewritePlan& out) {
    if (finished_) return {};
    try {
        const uint64_t pending = mode == config::OnPause::release ? fed_ : pending_from(mode);
        decide(mode == config::OnPause::hold ? pending : fed_, out);
        publish();
        return {};
    } catch (const std::bad_alloc&) {
        return Error{ENOMEM, "Rewriter::pause"};
    }
}

// The first held byte a pending match could cover (fed_: none). In mask mode, queues one span per
// rule with a pending match, from its start to the end of the input, as if the engine had reported
// it; decide() then covers those bytes like any match.
//
// Where can a pending match start? In the held bytes, or in bytes an earlier pause sent masked right
// before them (a secret typed across several pauses): any other released byte was released because
// no match still pending could start there (the hold-back bound, or this very check at a pause).
// So the text asked about is the masked bytes kept in recent_ (when they end where the held bytes
// begin), then the held bytes; PCRE2 scans contiguous text, so this is a copy, made at a pause
// only and at most hold_back bytes each; the output still references the input.
uint64_t Rewriter::pending_from(config::OnPause mode) {
    if (held_.empty()) return fed_;
    const bool continues = !recent_.empty() && recent_from_ + recent_.size() == decided_;
    std::string tail;
    tail.reserve((continues ? recent_.size() : 0) + (fed_ - decided_) + 1);
    if (continues ? recent_has_context_ : has_last_byte_)
        tail += static_cast<char>(continues ? recent_context_ : last_byte_);
    const size_t base = tail.size();                 // tail[base] is stream offset tail_from
    const uint64_t tail_from = continues ? recent_from_ : decided_;
    if (continues) tail += recent_;
    for (const SharedBytes& b : held_) tail.append(reinterpret_cast<const char*>(b.bytes().data()), b.size());
    auto index = [&](uint64_t offset) { return base + static_cast<size_t>(offset - tail_from); };

    uint64_t first = fed_;
    const auto& rules = db_->rules();
    for (size_t r = 0; r < rules.size(); ++r) {
        // A match not complete yet is shorter than the rule's widest: it starts in the last
        // hold_back bytes (0 for a one-byte rule: nothing of it can be pending).
        const uint64_t lo = std::max(tail_from, fed_ - std::min<uint64_t>(fed_, rules[r].hold_back));
        if (lo >= fed_) continue;
        const size_t at = rules[r].partial->pending_start(tail, index(lo));
        if (at == PartialMatcher::npos) continue;
        const uint64_t from = tail_from + (at - base);
        first = std::min(first, std::max(from, decided_));
        if (mode != config::OnPause::mask) continue;
        // A start before decided_ lies in bytes already sent masked: the span still starts there,
        // so a replacement goes on as one copy and nothing counts as late.
        fresh_.push_back(Match{from, fed_, static_cast<uint32_t>(r)});
        ++stats_.pause_masks;
        if (counters_) counters_->rules[r]->pause_masks.fetch_add(1, std::memory_order_relaxed);
    }
    if (mode != config::OnPause::mask || first >= fed_) return first;

    stats_.pause_masked_bytes += fed_ - first;
    if (!pause_masked_.empty() && pause_masked_.back().second >= first)
        pause_masked_.back().second = fed_;
    else
        pause_masked_.emplace_back(first, fed_);
    // Keep what this pause masks (joined to the masked bytes before it when they touch), at most
    // hold_back bytes, with the byte before as context for a leading \b.
    const size_t keep = std::max(continues && first == decided_ ? index(recent_from_) : index(first),
                                 tail.size() - std::min<size_t>(tail.size(), db_->hold_back()));
    recent_has_context_ = keep > 0;
    if (keep > 0) recent_context_ = static_cast<uint8_t>(tail[keep - 1]);
    recent_.assign(tail, keep, std::string::npos);
    recent_from_ = fed_ - recent_.size();
    return first;
}

uint64_t Rewriter::unmasked(uint64_t from, uint64_t to) const {
    uint64_t n = to - from;
    for (const auto& [a, b] : pause_masked_) {
        const uint64_t lo = std::max(a, from), hi = std::min(b, to);
        if (lo < hi) n -= hi - lo;
    }
    return n;
}

void Rewriter::publish() {
    if (!counters_ || !counters_->totals) return;
    auto add = [](std::atomic<uint64_t>& to, uint64_t now, uint64_t& was) {
        if (now != was) to.fetch_add(now - was, std::memory_order_relaxed);
        was = now;
    };
    DirectionTotals& t = *counters_->totals;
    add(t.bytes_inspected, stats_.bytes_inspected, published_.bytes_inspected);
    add(t.replacement_bytes, stats_.replacement_bytes, published_.replacement_bytes);
    add(t.verified_bytes_copied, stats_.verified_bytes_copied, published_.verified_bytes_copied);
    add(t.late_matches, stats_.late_matches, published_.late_matches);
}

// New engine reports join the pending list (sorted by start). A report reaching before decided_
// can only follow a pause(): it is applied to what has not been released yet, and counted as late
// when some of its released bytes went out in clear (not masked by the pause).
void Rewriter::absorb_fresh() {
    if (fresh_.empty()) return;
    for (const Match& m : fresh_) {
        if (m.from >= decided_) continue;
        if (uint64_t clear = unmasked(m.from, std::min(m.to, decided_)); clear > 0) {
            ++stats_.late_matches;
            stats_.late_bytes += clear;
        }
    }
    // pending_[0, pending_pos_) were activated already; drop them before merging.
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(pending_pos_));
    pending_pos_ = 0;
    std::sort(fresh_.begin(), fresh_.end(), by_start);
    size_t mid = pending_.size();
    pending_.insert(pending_.end(), fresh_.begin(), fresh_.end());
    std::inplace_merge(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(mid), pending_.end(),
                       by_start);
    fresh_.clear();
}

void Rewriter::activate(const Match& m) {
    if (m.rule >= rules_.size()) return;
    const CompiledRule& rule = db_->rules()[m.rule];
    RuleState& st = rules_[m.rule];
    // One occurrence per span starting past what this rule already covers: the engine reports a
    // variable-width match once per end offset, and those spans overlap the first one.
    if (m.from >= st.cover_end) {
        ++stats_.matches[m.rule];
        if (counters_) counters_->rules[m.rule]->count.fetch_add(1, std::memory_order_relaxed);
    }
    st.cover_end = std::max(st.cover_end, m.to);
    cover_max_ = std::max(cover_max_, m.to);
    if (rule.action == CompiledRule::Action::replace)
        replace_reach_ = std::max(replace_reach_, m.to);
    else if (!rule.replacement.empty()) {
        // Spans of one fixed width are activated in start order; those ending before this one
        // starts can cover no byte still undecided (b >= m.from), so the queue stays <= width long.
        while (!st.starts.empty() && st.starts.front() + rule.width <= m.from) st.starts.pop_front();
        st.starts.push_back(m.from);
    }
}

void Rewriter::take(uint64_t n, RewritePlan* out) {
    while (n > 0) {
        SharedBytes& front = held_.front();
        const size_t k = std::min<uint64_t>(front.size(), n);
        last_byte_ = front.bytes()[k - 1];
        has_last_byte_ = true;
        if (front.size() <= n) {
            n -= front.size();
            if (out) out->add_source(std::move(front));
            held_.pop_front();
        } else {
            if (out) out->add_source(front.slice(0, n));
            front = front.slice(n, front.size() - n);
            n = 0;
        }
    }
}

void Rewriter::emit_run(RewritePlan& out) {
    if (run_.empty()) return;
    if (run_all_stars_) {
        for (size_t off = 0; off < run_.size(); off += kStarsLen)
            out.add_static(kStars.data(), std::min(kStarsLen, run_.size() - off));
    } else {
        out.add_owned(run_);
    }
    stats_.replacement_bytes += run_.size();
    run_.clear();
    run_all_stars_ = true;
}

// Decides every byte in [decided_, limit): see the semantics in rewriter.hpp. Uncovered stretches
// are released as slices in one step; covered bytes are decided one at a time (O(rules) each).
void Rewriter::decide(uint64_t limit, RewritePlan& out) {
    absorb_fresh();
    const auto& rules = db_->rules();
    uint64_t b = decided_;
    auto next_start = [&]() -> uint64_t {
        return pending_pos_ < pending_.size() ? pending_[pending_pos_].from : UINT64_MAX;
    };
    while (b < limit) {
        // Late spans (from < b, only after flush()) are activated before anything is decided.
        while (next_start() < b) activate(pending_[pending_pos_++]);
        if (cover_max_ <= b && next_start() > b) {
            uint64_t end = std::min(next_start(), limit);
            take(end - b, &out);
            last_swallowed_ = false;
            b = end;
            continue;
        }
        // A covered run: one byte at a time until an uncovered byte (or the limit).
        uint64_t run_start = b;
        while (b < limit) {
            while (next_start() < b) activate(pending_[pending_pos_++]);
            const uint64_t reach_before = replace_reach_;  // spans starting before b
            while (next_start() == b) activate(pending_[pending_pos_++]);
            if (cover_max_ <= b) break;

            int replace = -1, overlay = -1;
            for (size_t r = 0; r < rules.size(); ++r) {
                if (rules_[r].cover_end <= b) continue;
                if (rules[r].action == CompiledRule::Action::replace) {
                    replace = static_cast<int>(r);
                    break;  // replacement wins over every overlay
                }
                if (overlay < 0) overlay = static_cast<int>(r);
            }
            if (replace >= 0) {
                // A new copy unless b continues a run whose previous byte was swallowed too.
                bool continues = reach_before > b && last_swallowed_;
                if (!continues) {
                    const std::string& text = rules[replace].replacement;
                    run_ += text;
                    run_all_stars_ = run_all_stars_ && text.find_first_not_of('*') == std::string::npos;
                }
                last_swallowed_ = true;
            } else {
                const CompiledRule& rule = rules[overlay];
                char c = rule.mask;
                if (!rule.replacement.empty()) {
                    auto& starts = rules_[overlay].starts;
                    while (!starts.empty() && starts.front() + rule.width <= b) starts.pop_front();
                    // Covered means a span of this rule contains b, so the queue is not empty.
                    c = starts.empty() ? rule.mask : rule.replacement[b - starts.front()];
                }
                run_ += c;
                run_all_stars_ = run_all_stars_ && c == '*';
                last_swallowed_ = false;
            }
            ++b;
        }
        stats_.bytes_redacted += b - run_start;
        take(b - run_start, nullptr);  // the covered input is not sent: only the run's bytes are
        emit_run(out);
    }
    decided_ = b;
    stats_.held_bytes = fed_ - decided_;
    stats_.held_bytes_max = std::max(stats_.held_bytes_max, stats_.held_bytes);
    out.finalize();
}

}  // namespace ztp::redact
