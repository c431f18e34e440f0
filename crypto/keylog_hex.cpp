// Why this file defines a glibc symbol.
//
// The userspace and kernel record paths take the TLS 1.3 traffic secrets from OpenSSL's keylog
// callback, OpenSSL 3.0's only way out for them (session_keys.cpp). The callback is set on the
// SSL_CTX, so OpenSSL formats all five secrets of every TLS 1.3 handshake, not only the two we
// keep, and it formats them one byte at a time: `sprintf(cursor, "%02x", byte)` in
// ssl/ssl_lib.c:nss_keylog_int, 320 calls per handshake through glibc's vfprintf, about 210 k
// instructions, 7 % of the user-space instructions of a whole ECDSA handshake here
// (tests/bench/peer_profile.py). libssl is built fortified, so the call is `__sprintf_chk`, made
// through libssl's PLT: a definition in our executable takes precedence over glibc's (ELF symbol
// interposition, the mechanism malloc replacements use).
//
// What it answers itself: exactly the format "%02x" with one value up to 0xff, into a destination
// glibc's fortify check would accept (3 bytes or more), with the same two lowercase digits and
// NUL, returning 2, as glibc does. Everything else (any other format, a larger value, a smaller
// destination, where glibc's own check must fail and abort) goes to glibc's __vsprintf_chk with the
// arguments unchanged. tests/unit/keylog_hex_test.cpp compares both for every byte value.
#include "crypto/keylog_hex.hpp"

#include <dlfcn.h>

#include <cstdarg>
#include <cstddef>
#include <cstdio>

// glibc's fortified entry points (bits/stdio2-decl.h declares them only under _FORTIFY_SOURCE).
extern "C" int __sprintf_chk(char* __restrict s, int flag, size_t slen, const char* __restrict format,
                             ...) noexcept;
extern "C" int __vsprintf_chk(char* __restrict s, int flag, size_t slen, const char* __restrict format,
                              va_list ap) noexcept;

extern "C" int __sprintf_chk(char* __restrict s, int flag, size_t slen, const char* __restrict format,
                             ...) noexcept {
    va_list ap;
    if (format[0] == '%' && format[1] == '0' && format[2] == '2' && format[3] == 'x' && format[4] == '\0' &&
        slen >= 3) {
        va_start(ap, format);
        const unsigned value = va_arg(ap, unsigned);
        va_end(ap);
        if (value <= 0xff) {
            static constexpr char kDigits[] = "0123456789abcdef";
            s[0] = kDigits[value >> 4];
            s[1] = kDigits[value & 0xf];
            s[2] = '\0';
            return 2;
        }
    }
    va_start(ap, format);
    const int n = __vsprintf_chk(s, flag, slen, format, ap);
    va_end(ap);
    return n;
}

namespace ztp::crypto {

bool keylog_hex_fast_path_active() {
    return dlsym(RTLD_DEFAULT, "__sprintf_chk") == reinterpret_cast<void*>(&__sprintf_chk);
}

}  // namespace ztp::crypto
