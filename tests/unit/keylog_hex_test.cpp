// The fast path for OpenSSL's keylog hex formatting (crypto/keylog_hex.cpp) answers what glibc
// would, byte for byte, and leaves everything else, fortify's check included, to glibc.
#include <gtest/gtest.h>

#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

#include "crypto/keylog_hex.hpp"

extern "C" int __sprintf_chk(char* __restrict s, int flag, size_t slen, const char* __restrict format,
                             ...) noexcept;

namespace ztp::crypto {
namespace {

// What glibc itself writes for the same call.
std::string glibc_format(const char* format, ...) {
    char buf[64];
    va_list ap;
    va_start(ap, format);
    const int n = std::vsnprintf(buf, sizeof buf, format, ap);
    va_end(ap);
    return std::string(buf, static_cast<size_t>(n));
}

TEST(KeylogHex, TheProcessResolvesLibsslsSprintfToTheFastPath) {
    EXPECT_TRUE(keylog_hex_fast_path_active());
}

TEST(KeylogHex, EveryByteValueGivesGlibcsTwoDigitsAndNothingMore) {
    for (unsigned v = 0; v <= 0xff; ++v) {
        char buf[8];
        std::memset(buf, 'Z', sizeof buf);
        const int n = __sprintf_chk(buf, 1, sizeof buf, "%02x", v);
        EXPECT_EQ(n, 2) << v;
        EXPECT_EQ(std::string(buf), glibc_format("%02x", v)) << v;
        EXPECT_EQ(buf[3], 'Z') << "wrote past the NUL for " << v;
    }
    // OpenSSL's own destination: the cursor into a line with room for exactly the digits and NUL.
    char tight[3];
    EXPECT_EQ(__sprintf_chk(tight, 1, sizeof tight, "%02x", 0xabu), 2);
    EXPECT_STREQ(tight, "ab");
}

TEST(KeylogHex, OtherFormatsAndLargerValuesGoToGlibcUnchanged) {
    char buf[64];
    EXPECT_EQ(__sprintf_chk(buf, 1, sizeof buf, "%02x", 0x1234u), 4);
    EXPECT_EQ(std::string(buf), "1234");
    EXPECT_EQ(__sprintf_chk(buf, 1, sizeof buf, "%02x", 0x100u), 3);
    EXPECT_EQ(std::string(buf), glibc_format("%02x", 0x100u));
    __sprintf_chk(buf, 1, sizeof buf, "%02X", 0xabu);
    EXPECT_EQ(std::string(buf), "AB");
    __sprintf_chk(buf, 1, sizeof buf, "%x", 0xau);
    EXPECT_EQ(std::string(buf), "a");
    __sprintf_chk(buf, 1, sizeof buf, "%02x%02x", 0xau, 0xbu);
    EXPECT_EQ(std::string(buf), "0a0b");
    __sprintf_chk(buf, 1, sizeof buf, "%02xz", 0xcu);
    EXPECT_EQ(std::string(buf), "0cz");
    __sprintf_chk(buf, 1, sizeof buf, "%s-%d", "secret", -7);
    EXPECT_EQ(std::string(buf), glibc_format("%s-%d", "secret", -7));
}

// A destination too small for two digits and a NUL is glibc's to refuse: fortify aborts the
// process instead of writing past it, with or without the fast path.
TEST(KeylogHexDeathTest, ADestinationTooSmallStillFailsFortifysCheck) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    char buf[2];
    EXPECT_DEATH(__sprintf_chk(buf, 1, sizeof buf, "%02x", 0xabu), "");
}

}  // namespace
}  // namespace ztp::crypto
