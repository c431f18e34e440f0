// A fast path for the hex formatting OpenSSL 3.0 does for every secret it hands to a keylog
// callback (keylog_hex.cpp): why it exists and what it answers is explained there.
#pragma once

namespace ztp::crypto {

// True when this process resolves `__sprintf_chk` (the fortified sprintf libssl calls) to the
// fast path, i.e. the executable was linked with keylog_hex.cpp and its definition interposes
// glibc's. enable_key_capture() calls it, which also keeps the fast path in every binary that
// captures keys (a static library's object is linked only when something refers to it).
bool keylog_hex_fast_path_active();

}  // namespace ztp::crypto
