#include "config/units.hpp"

#include <cctype>
#include <limits>

namespace ztp::config {

namespace {

bool fail(std::string* why, std::string msg) {
    if (why) *why = std::move(msg);
    return false;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Reads the decimal digits at the front of `s` into `out`; false on overflow of uint64_t.
bool take_number(std::string_view& s, uint64_t& out) {
    out = 0;
    size_t i = 0;
    for (; i < s.size() && is_digit(s[i]); ++i) {
        uint64_t d = static_cast<uint64_t>(s[i] - '0');
        if (out > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
        out = out * 10 + d;
    }
    s.remove_prefix(i);
    return true;
}

bool checked_mul_add(uint64_t& acc, uint64_t value, uint64_t factor, uint64_t limit) {
    if (factor != 0 && value > limit / factor) return false;
    uint64_t part = value * factor;
    if (acc > limit - part) return false;
    acc += part;
    return true;
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text, std::string* why) {
    constexpr const char* units_hint = " (use ms, s, m, h)";
    if (text.empty()) return fail(why, "empty duration"), std::nullopt;
    if (text.front() == '-') return fail(why, "negative durations are not allowed"), std::nullopt;
    if (text.front() == '+') return fail(why, "expected a number"), std::nullopt;

    // Components must come largest unit first and at most once each ("1h30m", not "30m1h"), so
    // a typo like "5s5s" is caught instead of silently summed.
    struct Unit {
        std::string_view name;
        uint64_t ms;
    };
    static constexpr Unit units[] = {{"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}, {"ms", 1}};
    const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<std::chrono::milliseconds::rep>::max());

    uint64_t total = 0;
    size_t next_unit = 0;  // index into units: smallest position still allowed
    std::string_view rest = text;
    while (!rest.empty()) {
        if (!is_digit(rest.front())) {
            fail(why, "expected a number" + std::string(rest.size() == text.size() ? "" : " after a unit"));
            return std::nullopt;
        }
        uint64_t value = 0;
        if (!take_number(rest, value)) return fail(why, "duration too large"), std::nullopt;
        if (!rest.empty() && (rest.front() == '.' || rest.front() == ','))
            return fail(why, "fractions are not supported; use a smaller unit"), std::nullopt;
        size_t len = 0;
        while (len < rest.size() && std::isalpha(static_cast<unsigned char>(rest[len]))) ++len;
        std::string_view unit = rest.substr(0, len);
        if (unit.empty()) return fail(why, std::string("missing unit") + units_hint), std::nullopt;
        size_t idx = 0;
        while (idx < std::size(units) && units[idx].name != unit) ++idx;
        if (idx == std::size(units)) {
            fail(why, "unknown unit '" + std::string(unit) + "'" + units_hint);
            return std::nullopt;
        }
        if (idx < next_unit)
            return fail(why, "units must go from largest to smallest, each once"), std::nullopt;
        next_unit = idx + 1;
        if (!checked_mul_add(total, value, units[idx].ms, limit))
            return fail(why, "duration too large"), std::nullopt;
        rest.remove_prefix(len);
    }
    return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(total));
}

std::optional<uint64_t> parse_size(std::string_view text, std::string* why) {
    if (text.empty()) return fail(why, "empty size"), std::nullopt;
    if (text.front() == '-') return fail(why, "negative sizes are not allowed"), std::nullopt;
    if (!is_digit(text.front())) return fail(why, "expected a number"), std::nullopt;

    std::string_view rest = text;
    uint64_t value = 0;
    if (!take_number(rest, value)) return fail(why, "size too large"), std::nullopt;
    if (!rest.empty() && (rest.front() == '.' || rest.front() == ','))
        return fail(why, "fractions are not supported; use a smaller unit"), std::nullopt;

    // Binary multiples only: "4k" means 4096, like most tools that take buffer sizes.
    // "KB"/"MB" are refused rather than guessed (1000 or 1024?).
    struct Unit {
        std::string_view name;
        uint64_t factor;
    };
    static constexpr Unit units[] = {
        {"", 1},           {"b", 1},          {"B", 1},
        {"k", 1ull << 10}, {"K", 1ull << 10}, {"KiB", 1ull << 10},
        {"m", 1ull << 20}, {"M", 1ull << 20}, {"MiB", 1ull << 20},
        {"g", 1ull << 30}, {"G", 1ull << 30}, {"GiB", 1ull << 30},
        {"t", 1ull << 40}, {"T", 1ull << 40}, {"TiB", 1ull << 40},
    };
    for (const auto& u : units) {
        if (u.name != rest) continue;
        uint64_t total = 0;
        if (!checked_mul_add(total, value, u.factor, std::numeric_limits<uint64_t>::max()))
            return fail(why, "size too large"), std::nullopt;
        return total;
    }
    std::string unit(rest);
    if (unit == "KB" || unit == "kB" || unit == "MB" || unit == "GB" || unit == "TB") {
        char prefix = static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0])));
        fail(why, "ambiguous unit '" + unit + "'; use " + prefix + "iB");
        return std::nullopt;
    }
    fail(why, "unknown unit '" + unit + "' (use B, KiB, MiB, GiB, TiB or k, M, G, T)");
    return std::nullopt;
}

}  // namespace ztp::config
