// ReloadRequests: how POST /reload (the admin thread) asks the main thread for the reload SIGHUP
// runs, and learns its outcome without blocking its event loop. The main thread owns the runtime
// and is the only one that ever reloads: the admin thread raises SIGHUP at it (pthread_kill: the
// seccomp filter allows signals to this process only) and is woken through an eventfd once a
// reload that began after its request has finished. Requests that arrive together are answered by
// the same reload (SIGHUPs coalesce too).
#pragma once

#include <pthread.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "proxy/base/result.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::app {

struct ReloadOutcome {
    bool applied = false;
    std::vector<std::string> problems;  // file:line:col: message, or why it could not run
};

class ReloadRequests {
public:
    static Result<std::unique_ptr<ReloadRequests>> create(pthread_t main_thread);

    // Admin thread: asks for a reload. Returns its ticket, or the outcome at once when it cannot
    // run (draining, the main thread cannot be signalled).
    struct Submitted {
        uint64_t ticket = 0;
        std::optional<ReloadOutcome> refused;
    };
    Submitted submit();
    // Admin thread: the outcome for `ticket`, or nullopt while its reload has not finished.
    // A later reload's outcome may answer an earlier ticket: it too began after the request.
    std::optional<ReloadOutcome> outcome(uint64_t ticket);
    // Readable (an eventfd) whenever a reload finished or requests were closed; the admin thread
    // reads it empty and then asks outcome() for each pending ticket.
    int ready_fd() const { return ready_.get(); }
    void clear_ready();

    // Main thread, around each reload (SIGHUP or requested): begin() before reading the policy,
    // finish() with what happened. Requests made before begin() get this outcome.
    void begin();
    void finish(const ReloadOutcome& outcome);
    // Main thread, when it stops taking reloads (draining): pending and later requests are refused.
    void close();

private:
    explicit ReloadRequests(pthread_t main_thread) : main_(main_thread) {}
    void wake();

    pthread_t main_;
    UniqueFd ready_;
    std::mutex mu_;
    uint64_t requested_ = 0;  // tickets handed out
    uint64_t serving_ = 0;    // the highest ticket the running reload answers
    uint64_t answered_ = 0;   // the highest ticket answered
    ReloadOutcome last_;
    bool closed_ = false;
};

}  // namespace ztp::app
