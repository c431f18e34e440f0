#include "proxy/conn/client_records.hpp"

#include <chrono>
#include <cstring>
#include <string>

#include "proxy/base/log.hpp"
#include "proxy/base/log_limiter.hpp"
#include "proxy/conn/stats.hpp"

namespace ztp::conn {

void note_relay_close(const char* close_reason) {
    if (close_reason == nullptr) return;
    if (auto c = crypto::counter_for_close_reason(close_reason))  // crypto/record_errors.hpp
        return bump(*c == crypto::RecordCounter::bad_records ? stats().bad_records : stats().malformed_records);
    if (std::strcmp(close_reason, "key_update_unsupported") != 0) return;
    bump(stats().ktls_key_update_closes);
    // Operators need to know why clients get cut off; clients must not flood the log: one line per
    // 10 s per worker, the first one at once (also right after boot, where a "last time" of zero
    // would have held it back for the first 10 s of the clock).
    static thread_local log::LogLimiter limiter(1, std::chrono::seconds(10));
    if (auto held_back = limiter.allow(log::LogLimiter::Clock::now())) {
        log::tls().info("a client sent a TLS 1.3 KeyUpdate; kTLS on this kernel cannot rekey, so the "
                        "connection is closed (needs Linux >= 6.14, or ktls = \"off\" on the listener){}",
                        *held_back ? " (" + std::to_string(*held_back) + " more since the last such line)" : "");
    }
}

void note_truncated_close() { bump(stats().truncated_closes); }

void note_key_updates(const crypto::RecordPath& path, uint64_t& seen) {
    const uint64_t now = path.key_updates_followed();
    if (now == seen) return;
    bump(stats().key_updates, now - seen);
    seen = now;
}

}  // namespace ztp::conn
