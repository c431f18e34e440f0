#include "config/units.hpp"

#include <gtest/gtest.h>

namespace ztp::config {
namespace {

using std::chrono::milliseconds;

TEST(ParseDuration, AcceptsEachUnit) {
    EXPECT_EQ(parse_duration("250ms"), milliseconds(250));
    EXPECT_EQ(parse_duration("5s"), milliseconds(5'000));
    EXPECT_EQ(parse_duration("2m"), milliseconds(120'000));
    EXPECT_EQ(parse_duration("1h"), milliseconds(3'600'000));
    EXPECT_EQ(parse_duration("0s"), milliseconds(0));
    EXPECT_EQ(parse_duration("007s"), milliseconds(7'000));
}

TEST(ParseDuration, AcceptsCombinedLargestFirst) {
    EXPECT_EQ(parse_duration("1m30s"), milliseconds(90'000));
    EXPECT_EQ(parse_duration("1h2m3s4ms"), milliseconds(3'723'004));
    EXPECT_EQ(parse_duration("1s500ms"), milliseconds(1'500));
}

TEST(ParseDuration, RejectsWithReason) {
    struct Case {
        const char* text;
        const char* why;
    };
    const Case cases[] = {
        {"", "empty duration"},
        {"-5s", "negative durations are not allowed"},
        {"+5s", "expected a number"},
        {"s", "expected a number"},
        {"5", "missing unit (use ms, s, m, h)"},
        {"5x", "unknown unit 'x' (use ms, s, m, h)"},
        {"5sec", "unknown unit 'sec' (use ms, s, m, h)"},
        {"5S", "unknown unit 'S' (use ms, s, m, h)"},
        {"1.5s", "fractions are not supported; use a smaller unit"},
        {"5 s", "missing unit (use ms, s, m, h)"},
        {"30s1m", "units must go from largest to smallest, each once"},
        {"5s5s", "units must go from largest to smallest, each once"},
        {"1m30", "missing unit (use ms, s, m, h)"},
        {"1m 30s", "expected a number after a unit"},
        {"99999999999999999999s", "duration too large"},
        {"9223372036854775807s", "duration too large"},
        {"2562047788015216h", "duration too large"},
    };
    for (const auto& c : cases) {
        std::string why;
        EXPECT_EQ(parse_duration(c.text, &why), std::nullopt) << c.text;
        EXPECT_EQ(why, c.why) << c.text;
    }
}

TEST(ParseDuration, LargestRepresentableFits) {
    // 9223372036854775807 ms is the limit of std::chrono::milliseconds (int64).
    EXPECT_EQ(parse_duration("9223372036854775807ms"), milliseconds::max());
    EXPECT_EQ(parse_duration("9223372036854775808ms"), std::nullopt);
    EXPECT_NE(parse_duration("2562047788015h"), std::nullopt);
}

TEST(ParseDuration, WhyIsOptional) { EXPECT_EQ(parse_duration("nope"), std::nullopt); }

TEST(ParseSize, AcceptsPlainAndUnits) {
    EXPECT_EQ(parse_size("0"), 0u);
    EXPECT_EQ(parse_size("4096"), 4096u);
    EXPECT_EQ(parse_size("12B"), 12u);
    EXPECT_EQ(parse_size("64KiB"), 64u * 1024);
    EXPECT_EQ(parse_size("4k"), 4096u);
    EXPECT_EQ(parse_size("4K"), 4096u);
    EXPECT_EQ(parse_size("1MiB"), 1u << 20);
    EXPECT_EQ(parse_size("1M"), 1u << 20);
    EXPECT_EQ(parse_size("3m"), 3u << 20);
    EXPECT_EQ(parse_size("1GiB"), 1ull << 30);
    EXPECT_EQ(parse_size("2G"), 2ull << 30);
    EXPECT_EQ(parse_size("1TiB"), 1ull << 40);
    EXPECT_EQ(parse_size("18446744073709551615"), UINT64_MAX);
    EXPECT_EQ(parse_size("16777215TiB"), 16777215ull << 40);
}

TEST(ParseSize, RejectsWithReason) {
    struct Case {
        const char* text;
        const char* why;
    };
    const Case cases[] = {
        {"", "empty size"},
        {"-1", "negative sizes are not allowed"},
        {"KiB", "expected a number"},
        {" 4k", "expected a number"},
        {"4 k", "unknown unit ' k' (use B, KiB, MiB, GiB, TiB or k, M, G, T)"},
        {"4kib", "unknown unit 'kib' (use B, KiB, MiB, GiB, TiB or k, M, G, T)"},
        {"4x", "unknown unit 'x' (use B, KiB, MiB, GiB, TiB or k, M, G, T)"},
        {"4KB", "ambiguous unit 'KB'; use KiB"},
        {"4kB", "ambiguous unit 'kB'; use KiB"},
        {"4MB", "ambiguous unit 'MB'; use MiB"},
        {"1.5MiB", "fractions are not supported; use a smaller unit"},
        {"18446744073709551616", "size too large"},
        {"16777216TiB", "size too large"},
        {"99999999999999999999999KiB", "size too large"},
    };
    for (const auto& c : cases) {
        std::string why;
        EXPECT_EQ(parse_size(c.text, &why), std::nullopt) << c.text;
        EXPECT_EQ(why, c.why) << c.text;
    }
}

}  // namespace
}  // namespace ztp::config
