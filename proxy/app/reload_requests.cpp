#include "proxy/app/reload_requests.hpp"

#include <signal.h>

namespace ztp::app {

ReloadOutcome ReloadRequests::request(std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    const ReloadOutcome draining{false, {"ztproxy is draining: no reloads"}};
    if (closed_) return draining;
    const uint64_t ticket = ++requested_;
    if (int rc = ::pthread_kill(main_, SIGHUP); rc != 0)
        return {false, {"cannot signal the main thread"}};
    if (!done_cv_.wait_for(lock, timeout, [&] { return answered_ >= ticket || closed_; }))
        return {false, {"the reload did not finish in time; see the log"}};
    return answered_ >= ticket ? last_ : draining;
}

void ReloadRequests::begin() {
    std::lock_guard lock(mu_);
    serving_ = requested_;
}

void ReloadRequests::close() {
    {
        std::lock_guard lock(mu_);
        closed_ = true;
    }
    done_cv_.notify_all();
}

void ReloadRequests::finish(const ReloadOutcome& outcome) {
    {
        std::lock_guard lock(mu_);
        last_ = outcome;
        answered_ = serving_;
    }
    done_cv_.notify_all();
}

}  // namespace ztp::app
