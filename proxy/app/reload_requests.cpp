#include "proxy/app/reload_requests.hpp"

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace ztp::app {

namespace {

ReloadOutcome draining() { return {false, {"ztproxy is draining: no reloads"}}; }

}  // namespace

Result<std::unique_ptr<ReloadRequests>> ReloadRequests::create(pthread_t main_thread) {
    std::unique_ptr<ReloadRequests> r(new ReloadRequests(main_thread));
    r->ready_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!r->ready_) return errno_error("reload eventfd");
    return r;
}

ReloadRequests::Submitted ReloadRequests::submit() {
    std::lock_guard lock(mu_);
    if (closed_) return {0, draining()};
    const uint64_t ticket = ++requested_;
    if (int rc = ::pthread_kill(main_, SIGHUP); rc != 0)
        return {0, ReloadOutcome{false, {"cannot signal the main thread"}}};
    return {ticket, std::nullopt};
}

std::optional<ReloadOutcome> ReloadRequests::outcome(uint64_t ticket) {
    std::lock_guard lock(mu_);
    if (answered_ >= ticket) return last_;
    if (closed_) return draining();
    return std::nullopt;
}

void ReloadRequests::clear_ready() {
    uint64_t count = 0;
    [[maybe_unused]] auto n = ::read(ready_.get(), &count, sizeof count);  // EAGAIN: already empty
}

void ReloadRequests::wake() {
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(ready_.get(), &one, sizeof one);  // only fails at 2^64-1 unread
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
    wake();
}

void ReloadRequests::finish(const ReloadOutcome& outcome) {
    {
        std::lock_guard lock(mu_);
        last_ = outcome;
        answered_ = serving_;
    }
    wake();
}

}  // namespace ztp::app
