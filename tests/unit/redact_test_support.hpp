// Shared by the redact_*_test.cpp files: building rule sets in code, feeding a stream in chunks,
// and a whole-buffer reference for the rewriter's semantics (see proxy/redact/rewriter.hpp).
#pragma once

#include <hs.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "config/redact_pattern.hpp"
#include "proxy/redact/rewriter.hpp"

namespace ztp::redact::testing {

inline config::RedactRule rx(std::string id, std::string pattern, bool ci = false) {
    config::RedactRule r;
    r.id = std::move(id);
    r.pattern = std::move(pattern);
    r.case_insensitive = ci;
    return r;
}

inline config::RedactRule lit(std::string id, std::string text, bool ci = false) {
    config::RedactRule r = rx(std::move(id), std::move(text), ci);
    r.literal = true;
    return r;
}

inline config::RedactRule with_replacement(config::RedactRule r, std::string replacement) {
    r.replacement = std::move(replacement);
    return r;
}

inline config::RedactRule with_mask(config::RedactRule r, char mask) {
    r.mask = mask;
    return r;
}

inline std::shared_ptr<const Database> compile(const std::vector<config::RedactRule>& rules) {
    std::vector<const config::RedactRule*> ptrs;
    for (const auto& r : rules) ptrs.push_back(&r);
    std::string why;
    auto db = Database::compile(ptrs, &why);
    if (!db) return nullptr;
    return *db;
}

struct Outcome {
    std::string output;
    RedactStats stats;
    uint64_t max_held = 0;
    bool ok = true;
};

// Feeds `input` split at `cuts` (sorted offsets) and concatenates every plan.
inline Outcome run_chunks(const std::shared_ptr<const Database>& db, const std::string& input,
                          const std::vector<size_t>& cuts) {
    Outcome o;
    auto scratch = Scratch();
    if (!scratch.grow_for(*db)) return {{}, {}, 0, false};
    auto w = Rewriter::open(db);
    if (!w) return {{}, {}, 0, false};
    RewritePlan plan;
    size_t at = 0;
    auto feed_to = [&](size_t end) {
        auto chunk = SharedBytes::copy_of(std::string_view(input).substr(at, end - at));
        if (!w->feed(std::move(chunk), scratch, plan)) o.ok = false;
        o.max_held = std::max(o.max_held, w->held());
        o.output += plan.to_string();
        plan.clear();
        at = end;
    };
    for (size_t c : cuts)
        if (c > at && c <= input.size()) feed_to(c);
    feed_to(input.size());
    if (!w->finish(scratch, plan)) o.ok = false;
    o.output += plan.to_string();
    o.stats = w->stats();
    return o;
}

inline std::vector<size_t> random_cuts(size_t size, size_t max_piece, std::mt19937& rng) {
    std::vector<size_t> cuts;
    std::uniform_int_distribution<size_t> step(1, std::max<size_t>(1, max_piece));
    for (size_t at = step(rng); at < size; at += step(rng)) cuts.push_back(at);
    return cuts;
}

inline std::vector<size_t> every_byte(size_t size) {
    std::vector<size_t> cuts;
    for (size_t i = 1; i < size; ++i) cuts.push_back(i);
    return cuts;
}

struct Span {
    uint64_t from, to;
    unsigned rule;
};

// Every occurrence of each literal rule, by plain search (ASCII case folding when asked).
inline void literal_spans(const std::string& buf, const config::RedactRule& rule, unsigned id,
                          std::vector<Span>& out) {
    auto eq = [&](char a, char b) {
        if (!rule.case_insensitive) return a == b;
        return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
    };
    const std::string& n = rule.pattern;
    if (n.empty() || n.size() > buf.size()) return;
    for (size_t i = 0; i + n.size() <= buf.size(); ++i) {
        size_t k = 0;
        while (k < n.size() && eq(buf[i + k], n[k])) ++k;
        if (k == n.size()) out.push_back({i, i + n.size(), id});
    }
}

// The engine in BLOCK mode over the whole buffer: no streams, no chunks, no hold-back.
inline std::vector<Span> block_spans(const std::string& buf, const std::vector<config::RedactRule>& rules) {
    std::vector<std::string> exprs;
    std::vector<const char*> ptrs;
    std::vector<unsigned> flags, ids;
    for (unsigned i = 0; i < rules.size(); ++i) {
        exprs.push_back(config::redact_expression(rules[i]));
        flags.push_back(config::redact_flags(rules[i]));
        ids.push_back(i);
    }
    for (auto& e : exprs) ptrs.push_back(e.c_str());
    hs_database_t* db = nullptr;
    hs_compile_error_t* err = nullptr;
    std::vector<Span> out;
    if (hs_compile_multi(ptrs.data(), flags.data(), ids.data(), static_cast<unsigned>(ptrs.size()),
                         HS_MODE_BLOCK, nullptr, &db, &err) != HS_SUCCESS) {
        hs_free_compile_error(err);
        return out;
    }
    hs_scratch_t* s = nullptr;
    hs_alloc_scratch(db, &s);
    hs_scan(db, buf.data(), static_cast<unsigned>(buf.size()), 0, s,
            [](unsigned id, unsigned long long from, unsigned long long to, unsigned, void* ctx) {
                static_cast<std::vector<Span>*>(ctx)->push_back({from, to, id});
                return 0;
            },
            &out);
    hs_free_scratch(s);
    hs_free_database(db);
    return out;
}

// The semantics of rewriter.hpp applied to the whole buffer at once, byte by byte.
inline std::string reference_apply(const std::string& buf, const std::vector<config::RedactRule>& rules,
                                   const std::vector<Span>& spans) {
    const size_t n = buf.size(), R = rules.size();
    std::vector<std::vector<int64_t>> cover_start(R);  // smallest start of a span covering b, or -1
    std::vector<bool> is_replace(R);
    std::vector<unsigned> width(R);
    for (size_t r = 0; r < R; ++r) {
        std::string why;
        auto info = config::analyze_rule(rules[r], &why);
        width[r] = info ? info->max_width : 0;
        bool same = info && rules[r].replacement && info->min_width == info->max_width &&
                    info->max_width == rules[r].replacement->size();
        is_replace[r] = rules[r].replacement && !same;
    }
    for (auto& c : cover_start) c.assign(n, -1);
    std::vector<uint64_t> reach(n + 1, 0);  // reach[b] = max `to` of replace spans with from < b
    for (const Span& s : spans) {
        for (uint64_t b = s.from; b < s.to && b < n; ++b)
            if (cover_start[s.rule][b] < 0 || cover_start[s.rule][b] > static_cast<int64_t>(s.from))
                cover_start[s.rule][b] = static_cast<int64_t>(s.from);
        if (is_replace[s.rule] && s.from + 1 <= n) reach[s.from + 1] = std::max(reach[s.from + 1], s.to);
    }
    for (size_t b = 1; b <= n; ++b) reach[b] = std::max(reach[b], reach[b - 1]);
    std::string out;
    for (size_t b = 0; b < n; ++b) {
        int rep = -1, ov = -1;
        for (size_t r = 0; r < R; ++r) {
            if (cover_start[r][b] < 0) continue;
            if (is_replace[r]) {
                rep = static_cast<int>(r);
                break;
            }
            if (ov < 0) ov = static_cast<int>(r);
        }
        if (rep >= 0) {
            if (!(reach[b] > b)) out += *rules[rep].replacement;
        } else if (ov >= 0) {
            const auto& rule = rules[ov];
            out += rule.replacement ? (*rule.replacement)[b - cover_start[ov][b]] : rule.mask;
        } else {
            out += buf[b];
        }
    }
    return out;
}

inline std::string reference(const std::string& buf, const std::vector<config::RedactRule>& rules) {
    return reference_apply(buf, rules, block_spans(buf, rules));
}

}  // namespace ztp::redact::testing
