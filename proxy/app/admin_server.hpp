// AdminServer: the operator's HTTP endpoint, on its own thread and its own (usually loopback)
// address or Unix socket, away from the data plane: GET /metrics (Prometheus text format),
// /healthz (the process is alive), /ready (200 while serving, 503 while draining, so load
// balancers stop sending), and POST /reload (what SIGHUP does, answered with the outcome: 200, or
// 409 with the problems).
//
// One request per connection, many connections at once on one epoll loop, so a client that
// dribbles its request cannot hold up a health probe: each connection has a deadline for the
// whole request (accept to the last byte of the response, not per read), the request head has a
// size cap, and the number of open connections has a cap. At the cap a new connection closes the
// oldest one still sending its request (a probe sends its request at once and is answered within
// a round trip, so the oldest unfinished request is the one least likely to be a probe), or is
// itself closed when every open connection is already being answered.
//
// With a bearer token POST /reload (and /metrics with metrics_require_token) answer 401 without
// it; /healthz and /ready never ask for it: they are what probes call and say nothing secret.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "config/policy.hpp"
#include "proxy/app/admin_auth.hpp"
#include "proxy/app/reload_requests.hpp"
#include "proxy/base/log_limiter.hpp"
#include "proxy/base/result.hpp"
#include "proxy/base/socket_address.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::app {

class AdminServer {
public:
    // Renders the proxy's part of the /metrics body; called on the admin thread at every scrape.
    using MetricsRenderer = std::function<std::string()>;

    // What a reload may change: the token, what needs it, the caps and the deadline. The sockets
    // stay (a restart moves them).
    struct Settings {
        AdminToken token;
        bool metrics_require_token = false;
        uint32_t max_connections = 64;
        size_t max_request = 8192;
        std::chrono::milliseconds request_timeout{2000};
    };
    static Settings settings_from(const config::Admin& admin);

    struct Endpoints {
        std::optional<SocketAddress> tcp;
        std::string unix_path;  // empty: none
        uint32_t unix_mode = 0600;
    };

    // Binding and serving are two steps: the sockets are bound while ztproxy may still hold
    // privileges (a port below 1024, a socket in /run), the thread starts once they are dropped
    // (a thread that exists before would keep its own capabilities). `reload`: null when there is
    // nothing to reload; it must outlive the server.
    static Result<std::unique_ptr<AdminServer>> bind(const Endpoints& endpoints, Settings settings,
                                                     MetricsRenderer metrics, ReloadRequests* reload);
    void start();
    ~AdminServer();

    std::optional<SocketAddress> address() const { return address_; }
    const std::string& unix_path() const { return unix_path_; }
    void set_ready(bool ready) { ready_.store(ready, std::memory_order_relaxed); }
    // Main thread, after a reload: new requests use these (open connections keep their deadline).
    void update(Settings settings);

private:
    using Clock = std::chrono::steady_clock;
    enum class State { reading, reloading, writing, closed };
    struct Conn {
        UniqueFd fd;
        Clock::time_point deadline;
        State state = State::reading;
        std::string in;
        std::string out;
        size_t sent = 0;
        uint64_t reload_ticket = 0;
        std::string peer;  // for the log: "1.2.3.4:5678" or "unix socket"
    };
    struct Counters {
        uint64_t accepted = 0;
        uint64_t deadline = 0, evicted = 0, full = 0;          // connections closed by the server
        uint64_t too_large = 0, bad_request = 0, unauthorized = 0;  // requests refused
    };

    AdminServer() = default;
    void run();
    void accept_all(int listen_fd, bool is_unix);
    void pause_accepting(Clock::time_point now);
    void resume_accepting();
    bool make_room();
    void on_event(Conn& c, uint32_t events);
    void read_request(Conn& c);
    void handle(Conn& c);
    void respond(Conn& c, const char* status, const std::string& body, const char* type = "text/plain",
                 const char* extra_headers = "");
    void flush(Conn& c);
    void close(Conn& c);
    void answer_reloads();
    void expire(Clock::time_point now);
    int next_timeout(Clock::time_point now) const;
    bool watch(Conn& c, uint32_t events);
    std::string render_metrics();
    void refuse_unauthorized(Conn& c, const char* what);

    UniqueFd epoll_;
    UniqueFd listen_tcp_;
    UniqueFd listen_unix_;
    UniqueFd stop_;  // eventfd: the destructor wakes the thread
    std::optional<SocketAddress> address_;
    std::string unix_path_;
    MetricsRenderer metrics_;
    ReloadRequests* reload_ = nullptr;
    std::atomic<bool> ready_{true};

    mutable std::mutex settings_mu_;  // update() on the main thread, read by the admin thread
    Settings settings_;
    Settings current_;  // the admin thread's copy, refreshed once per loop turn

    std::list<Conn> conns_;  // in accept order: the front is the oldest
    size_t open_ = 0;        // conns_ not closed
    Counters counters_;
    std::optional<Clock::time_point> accept_paused_until_;
    log::LogLimiter log_limiter_{5};
    std::thread thread_;
};

}  // namespace ztp::app
