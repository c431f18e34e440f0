// libFuzzer target: the redaction rule compiler and the streaming rewriter.
//
// Input layout (every field is optional; short inputs just end early):
//   byte 0           number of rules, 1..4 (low 2 bits + 1)
//   per rule         flags byte: bit0 literal, bit1 case-insensitive, bit2 replacement,
//                    bits 3-5 replacement length (0..7), bit6 mask '#' instead of '*'
//                    length byte (low 5 bits: 1..32) + that many pattern bytes
//   cuts             count byte (0..31) + that many piece sizes (1..256 each)
//   the rest         the stream
// Rules the policy checks reject are dropped (that path is exercised too). The stream is rewritten
// whole, then in the fuzzer's pieces, then one byte at a time: the three outputs must be equal,
// the hold-back must stay within the database's bound, and nothing may be reported late.
// Then in the fuzzer's pieces with a pause after each (Rewriter::pause):
//   hold     the output equals the unpaused one (nothing is released that a match could cover);
//   mask     no match reaches into bytes released in clear (late_matches == 0), and where no rule
//            changes the length, no byte the unpaused output redacts goes out as it came in;
//   release  runs (late matches are its documented cost).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "config/redact_pattern.hpp"
#include "proxy/redact/rewriter.hpp"

namespace {

using namespace ztp;

struct Reader {
    const uint8_t* p;
    size_t n;
    bool take(uint8_t& out) {
        if (n == 0) return false;
        out = *p++;
        --n;
        return true;
    }
};

std::string rewrite(const std::shared_ptr<const redact::Database>& db, redact::Scratch& scratch,
                    const uint8_t* data, size_t size, const std::vector<size_t>& pieces,
                    std::optional<config::OnPause> pause = std::nullopt) {
    auto w = redact::Rewriter::open(db);
    if (!w) std::abort();
    std::string out;
    redact::RewritePlan plan;
    size_t at = 0, i = 0;
    while (at < size) {
        size_t n = pieces.empty() ? size - at : std::min(pieces[i++ % pieces.size()], size - at);
        auto chunk = redact::SharedBytes::copy_of(std::span<const uint8_t>(data + at, n));
        if (!w->feed(std::move(chunk), scratch, plan)) std::abort();
        if (w->held() > db->hold_back()) std::abort();
        if (pause && !w->pause(*pause, plan)) std::abort();
        if (pause == config::OnPause::mask && w->held() != 0) std::abort();
        at += n;
    }
    if (!w->finish(scratch, plan)) std::abort();
    if (w->stats().verified_bytes_copied != 0) std::abort();
    if (pause != config::OnPause::release && w->stats().late_matches != 0) std::abort();
    out = plan.to_string();
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Reader r{data, size};
    uint8_t b = 0;
    if (!r.take(b)) return 0;
    const int count = (b & 3) + 1;
    std::vector<config::RedactRule> rules;
    for (int i = 0; i < count; ++i) {
        uint8_t flags = 0, len = 0;
        if (!r.take(flags) || !r.take(len)) return 0;
        len = static_cast<uint8_t>((len & 31) + 1);
        if (r.n < len) return 0;
        config::RedactRule rule;
        rule.id = "r" + std::to_string(i);
        rule.literal = flags & 1;
        rule.case_insensitive = flags & 2;
        rule.pattern.assign(reinterpret_cast<const char*>(r.p), len);
        r.p += len;
        r.n -= len;
        if (flags & 4) rule.replacement = std::string((flags >> 3) & 7, 'R');
        if (flags & 64) rule.mask = '#';
        // The engine rejects embedded NULs in a regex; the policy loader would too (as a bad pattern).
        std::string why;
        if (!rule.literal && rule.pattern.find('\0') != std::string::npos) continue;
        if (!config::analyze_rule(rule, &why)) continue;
        rules.push_back(std::move(rule));
    }
    if (rules.empty()) return 0;
    std::vector<size_t> pieces;
    uint8_t ncuts = 0;
    if (r.take(ncuts)) {
        for (int i = 0; i < (ncuts & 31); ++i) {
            uint8_t s = 0;
            if (!r.take(s)) break;
            pieces.push_back(static_cast<size_t>(s) + 1);
        }
    }
    std::vector<const config::RedactRule*> ptrs;
    for (const auto& rule : rules) ptrs.push_back(&rule);
    std::string why;
    auto db = redact::Database::compile(ptrs, &why);
    if (!db) std::abort();  // every rule passed the policy checks: the set must compile
    redact::Scratch scratch;
    if (!scratch.grow_for(**db)) std::abort();

    const std::string whole = rewrite(*db, scratch, r.p, r.n, {});
    if (rewrite(*db, scratch, r.p, r.n, pieces) != whole) std::abort();
    if (r.n <= 4096 && rewrite(*db, scratch, r.p, r.n, {1}) != whole) std::abort();

    if (rewrite(*db, scratch, r.p, r.n, pieces, config::OnPause::hold) != whole) std::abort();
    rewrite(*db, scratch, r.p, r.n, pieces, config::OnPause::release);
    const std::string masked = rewrite(*db, scratch, r.p, r.n, pieces, config::OnPause::mask);
    if (!(*db)->changes_length()) {
        if (masked.size() != r.n || whole.size() != r.n) std::abort();
        // A byte equal to some rule's mask or fill may legitimately come out unchanged.
        auto could_be_output = [&](uint8_t c) {
            for (const auto& rule : (*db)->rules())
                if (static_cast<uint8_t>(rule.mask) == c || rule.replacement.find(static_cast<char>(c)) != std::string::npos)
                    return true;
            return false;
        };
        for (size_t i = 0; i < r.n; ++i)
            if (static_cast<uint8_t>(whole[i]) != r.p[i] && static_cast<uint8_t>(masked[i]) == r.p[i] &&
                !could_be_output(r.p[i]))
                std::abort();
    }
    return 0;
}
