// LogLimiter: lets at most `per_second` lines through per one-second window, so an event a peer
// can trigger at will (a bad client certificate, say) cannot flood the operational log. Lines
// held back are counted, and the next line let through says how many there were. Not
// thread-safe: one per thread (each worker has its own).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace ztp::log {

class LogLimiter {
public:
    using Clock = std::chrono::steady_clock;

    explicit LogLimiter(uint32_t per_second) : per_second_(per_second) {}

    // The number of lines suppressed since the last one let through, or nullopt: drop this one.
    std::optional<uint64_t> allow(Clock::time_point now) {
        if (now - window_start_ >= std::chrono::seconds(1)) {
            window_start_ = now;
            in_window_ = 0;
        }
        if (in_window_ >= per_second_) {
            ++suppressed_;
            return std::nullopt;
        }
        ++in_window_;
        uint64_t held_back = suppressed_;
        suppressed_ = 0;
        return held_back;
    }

private:
    uint32_t per_second_;
    Clock::time_point window_start_{};
    uint32_t in_window_ = 0;
    uint64_t suppressed_ = 0;
};

}  // namespace ztp::log
