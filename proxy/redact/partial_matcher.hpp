// PartialMatcher: one rule's answer to "could these held bytes begin a match that is not complete
// yet?", asked when the input pauses (Rewriter::pause). The streaming engine keeps its partial-match
// state to itself, so the question goes to PCRE2's DFA matcher with PCRE2_PARTIAL_HARD over the
// held tail (at most the rule's hold-back, a few KiB, only at a pause): it reports a match that the
// end of the subject cut short, and where it starts.
//
// The rule's expression and flags are the ones the engine compiles (config/redact_pattern.hpp);
// both dialects are PCRE syntax without backreferences. Where PCRE2 cannot answer (it refuses the
// expression, or a scan runs out of workspace), the answer is "from the first byte asked about":
// every held byte the rule could cover counts as pending (fail closed).
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "config/policy.hpp"

struct pcre2_real_code_8;

namespace ztp::redact {

class PartialMatcher {
public:
    // Never fails: a rule PCRE2 cannot compile gets the fail-closed answer.
    explicit PartialMatcher(const config::RedactRule& rule);

    // `subject` is the stream's tail; bytes before `from` are context only (the byte before the held
    // ones, for \b). The smallest offset >= from at which a match could start that is either cut
    // short by the end of `subject` or could still grow; or npos when none can.
    size_t pending_start(std::string_view subject, size_t from) const;

    bool exact() const { return code_ != nullptr; }  // false: the fail-closed answer
    static constexpr size_t npos = static_cast<size_t>(-1);

private:
    struct Free {
        void operator()(pcre2_real_code_8* c) const;
    };
    std::unique_ptr<pcre2_real_code_8, Free> code_;
};

}  // namespace ztp::redact
