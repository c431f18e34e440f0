// LogLimiter: lets at most `per_window` lines through per window (one second unless given), so an
// event a peer can trigger at will (a bad client certificate, say) cannot flood the operational
// log. Lines held back are counted, and the next line let through says how many there were. The
// first line is never held back, also when the clock started less than a window ago (steady_clock
// counts from boot: a fresh VM). Not thread-safe: one per thread (each worker has its own).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace ztp::log {

class LogLimiter {
public:
    using Clock = std::chrono::steady_clock;

    explicit LogLimiter(uint32_t per_window, Clock::duration window = std::chrono::seconds(1))
        : per_window_(per_window), window_(window) {}

    // The number of lines suppressed since the last one let through, or nullopt: drop this one.
    std::optional<uint64_t> allow(Clock::time_point now) {
        if (now - window_start_ >= window_) {
            window_start_ = now;
            in_window_ = 0;
        }
        if (in_window_ >= per_window_) {
            ++suppressed_;
            return std::nullopt;
        }
        ++in_window_;
        uint64_t held_back = suppressed_;
        suppressed_ = 0;
        return held_back;
    }

private:
    uint32_t per_window_;
    Clock::duration window_;
    Clock::time_point window_start_{};
    uint32_t in_window_ = 0;
    uint64_t suppressed_ = 0;
};

}  // namespace ztp::log
