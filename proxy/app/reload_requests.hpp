// ReloadRequests: how POST /reload (the admin thread) asks the main thread for the reload SIGHUP
// runs, and waits for its outcome. The main thread owns the runtime and is the only one that ever
// reloads: the admin thread raises SIGHUP at it (pthread_kill: the seccomp filter allows signals
// to this process only) and waits until a reload that began after its request has finished.
// Requests that arrive together are answered by the same reload (SIGHUPs coalesce too).
#pragma once

#include <pthread.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace ztp::app {

struct ReloadOutcome {
    bool applied = false;
    std::vector<std::string> problems;  // file:line:col: message, or why it could not run
};

class ReloadRequests {
public:
    explicit ReloadRequests(pthread_t main_thread) : main_(main_thread) {}

    // Admin thread: asks for a reload and waits for it (bounded: a reload parses files and builds
    // TLS contexts, it never waits on clients).
    ReloadOutcome request(std::chrono::seconds timeout);

    // Main thread, around each reload (SIGHUP or requested): begin() before reading the policy,
    // finish() with what happened. Requests made before begin() get this outcome.
    void begin();
    void finish(const ReloadOutcome& outcome);
    // Main thread, when it stops taking reloads (draining): pending and later requests are refused.
    void close();

private:
    pthread_t main_;
    std::mutex mu_;
    std::condition_variable done_cv_;
    uint64_t requested_ = 0;  // tickets handed out
    uint64_t serving_ = 0;    // the highest ticket the running reload answers
    uint64_t answered_ = 0;   // the highest ticket answered
    ReloadOutcome last_;
    bool closed_ = false;
};

}  // namespace ztp::app
