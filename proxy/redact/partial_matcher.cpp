#define PCRE2_CODE_UNIT_WIDTH 8
#include "proxy/redact/partial_matcher.hpp"

#include <pcre2.h>

#include <algorithm>
#include <array>

#include "config/redact_pattern.hpp"

namespace ztp::redact {

namespace {

struct MatchDataFree {
    void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

}  // namespace

void PartialMatcher::Free::operator()(pcre2_real_code_8* c) const { pcre2_code_free(c); }

PartialMatcher::PartialMatcher(const config::RedactRule& rule) {
    const std::string expr = config::redact_expression(rule);
    // The engine's defaults are PCRE's: no UTF, `.` without newline, ^/$ at the ends of the data.
    uint32_t options = rule.case_insensitive ? PCRE2_CASELESS : 0;
    int err = 0;
    PCRE2_SIZE at = 0;
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(expr.data()), expr.size(), options, &err, &at, nullptr));
}

size_t PartialMatcher::pending_start(std::string_view subject, size_t from) const {
    if (from >= subject.size()) return npos;
    if (!code_) return from;
    std::unique_ptr<pcre2_match_data, MatchDataFree> md(pcre2_match_data_create(1, nullptr));
    if (!md) return from;
    // The DFA matcher cannot backtrack into exponential time; its workspace bounds the states it
    // tracks at once (running out is an error: fail closed below).
    std::array<int, 1000> workspace{};
    const auto* text = reinterpret_cast<PCRE2_SPTR>(subject.data());
    size_t start = from;
    while (start < subject.size()) {
        int rc = pcre2_dfa_match(code_.get(), text, subject.size(), start, PCRE2_PARTIAL_HARD, md.get(), nullptr,
                                 workspace.data(), workspace.size());
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        // A partial "match" starting at the very end covers no byte (a leading \b looked at the
        // byte before): nothing is pending.
        if (rc == PCRE2_ERROR_PARTIAL) return ov[0] < subject.size() ? std::max<size_t>(ov[0], from) : npos;
        if (rc == PCRE2_ERROR_NOMATCH) return npos;
        if (rc < 0) return from;
        // A complete match that the end did not cut short was reported by the engine already;
        // a later start may still be pending.
        start = ov[0] + 1;
    }
    return npos;
}

}  // namespace ztp::redact
