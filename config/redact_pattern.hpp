// How a redaction rule's pattern is given to the matching engine (Vectorscan, the Hyperscan API),
// shared by the policy checks (config/) and the compiler (proxy/redact/) so both see the same
// expression, flags and widths. No toml++ here; the engine is a plain C library.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "config/policy.hpp"

namespace ztp::config {

// Every rule is compiled in stream mode with leftmost start-of-match (replacement spans need the
// start, and matches may span chunk and record boundaries).
unsigned redact_mode();              // HS_MODE_STREAM | HS_MODE_SOM_HORIZON_LARGE
unsigned redact_flags(const RedactRule& rule);  // HS_FLAG_SOM_LEFTMOST [| HS_FLAG_CASELESS]
// The regex, or the literal with every byte escaped as \xHH (exact, NUL-safe, no metacharacters).
std::string redact_expression(const RedactRule& rule);

// A match longer than this could not be rewritten without holding back more plaintext than a
// connection buffer: the rewriter holds back up to max_width - 1 (+2) bytes of the stream.
constexpr unsigned kMaxRedactMatchWidth = 4096;

struct PatternInfo {
    unsigned min_width = 0;
    unsigned max_width = 0;
    // The pattern ends in an assertion that looks past the match (\b, \B, $, \Z, (?m)$): the engine
    // reports such a match one byte late, or only at end of stream for "before a final newline".
    bool trailing_context = false;
};

// Checks the rule with the engine (expression info + a real compile with the production mode and
// flags). On failure returns nullopt and sets *why to a message for `file:line:col: ` at the pattern.
std::optional<PatternInfo> analyze_rule(const RedactRule& rule, std::string* why);

// How many bytes the rewriter must hold back for this rule: the tail of the stream that a match
// which is still in progress (or reported late, see trailing_context) could yet cover.
inline unsigned redact_hold_back(const PatternInfo& info) {
    return info.max_width - 1 + (info.trailing_context ? 2u : 0u);
}

}  // namespace ztp::config
