#include "config/redact_pattern.hpp"

#include <hs.h>

#include <climits>
#include <cstdlib>
#include <memory>

namespace ztp::config {

namespace {

struct CompileErrorFree {
    void operator()(hs_compile_error_t* e) const { hs_free_compile_error(e); }
};
struct DatabaseFree {
    void operator()(hs_database_t* d) const { hs_free_database(d); }
};
struct InfoFree {
    void operator()(hs_expr_info_t* i) const { std::free(i); }  // allocated by hs_misc_alloc = malloc
};

// The engine's messages end with a period and start upper case; ours read "...: message".
std::string engine_message(const hs_compile_error_t* e) {
    std::string m = e && e->message ? e->message : "rejected by the engine";
    while (!m.empty() && (m.back() == '.' || m.back() == ' ')) m.pop_back();
    return m;
}

}  // namespace

unsigned redact_mode() { return HS_MODE_STREAM | HS_MODE_SOM_HORIZON_LARGE; }

unsigned redact_flags(const RedactRule& rule) {
    unsigned f = HS_FLAG_SOM_LEFTMOST;
    if (rule.case_insensitive) f |= HS_FLAG_CASELESS;
    return f;
}

std::string redact_expression(const RedactRule& rule) {
    if (!rule.literal) return rule.pattern;
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(rule.pattern.size() * 4);
    for (unsigned char c : rule.pattern) {
        out += "\\x";
        out += hex[c >> 4];
        out += hex[c & 15];
    }
    return out;
}

std::optional<PatternInfo> analyze_rule(const RedactRule& rule, std::string* why) {
    const char* what = rule.literal ? "literal" : "pattern";
    if (rule.pattern.empty()) {
        *why = std::string("'") + what + "' must not be empty";
        return std::nullopt;
    }
    const std::string expr = redact_expression(rule);
    const unsigned flags = redact_flags(rule);

    hs_expr_info_t* raw_info = nullptr;
    hs_compile_error_t* raw_err = nullptr;
    if (hs_expression_info(expr.c_str(), flags, &raw_info, &raw_err) != HS_SUCCESS) {
        std::unique_ptr<hs_compile_error_t, CompileErrorFree> err(raw_err);
        *why = std::string("bad ") + what + ": " + engine_message(err.get());
        return std::nullopt;
    }
    std::unique_ptr<hs_expr_info_t, InfoFree> info(raw_info);
    PatternInfo out;
    out.min_width = info->min_width;
    out.max_width = info->max_width;
    out.trailing_context = info->unordered_matches || info->matches_at_eod;
    if (out.min_width == 0) {
        *why = "pattern can match the empty string";
        return std::nullopt;
    }
    if (out.max_width == UINT_MAX) {
        *why = "pattern can match unbounded input; bound it (e.g. {1,64})";
        return std::nullopt;
    }
    if (out.max_width > kMaxRedactMatchWidth) {
        *why = std::string(what) + " can match up to " + std::to_string(out.max_width) +
               " bytes; at most " + std::to_string(kMaxRedactMatchWidth) +
               " are allowed (the rewriter holds back that much plaintext)";
        return std::nullopt;
    }
    // expression_info does not try start-of-match tracking or stream mode; some patterns compile
    // only without them. A real compile now keeps that failure out of `ztproxy run`.
    hs_database_t* raw_db = nullptr;
    if (hs_compile(expr.c_str(), flags, redact_mode(), nullptr, &raw_db, &raw_err) != HS_SUCCESS) {
        std::unique_ptr<hs_compile_error_t, CompileErrorFree> err(raw_err);
        *why = std::string("bad ") + what + ": " + engine_message(err.get());
        return std::nullopt;
    }
    std::unique_ptr<hs_database_t, DatabaseFree> db(raw_db);
    return out;
}

}  // namespace ztp::config
