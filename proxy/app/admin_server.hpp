// AdminServer: the operator's HTTP endpoint, on its own thread and its own (usually loopback)
// address, away from the data plane: GET /metrics (Prometheus text format), /healthz (the process
// is alive), /ready (200 while serving, 503 while draining, so load balancers stop sending), and
// POST /reload (what SIGHUP does, answered with the outcome: 200, or 409 with the problems).
// One request per connection, bounded in size and time: it is an admin port, not a web server.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include "proxy/base/result.hpp"
#include "proxy/base/socket_address.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::app {

class AdminServer {
public:
    // `metrics` renders the /metrics body; called on the admin thread at every scrape.
    using MetricsRenderer = std::function<std::string()>;
    // POST /reload: runs a reload to its end and says how it went. Empty: nothing to reload.
    struct ReloadReply {
        bool applied;
        std::string text;  // "reload applied", or the problems, one per line
    };
    using ReloadHandler = std::function<ReloadReply()>;
    // Binding and serving are two steps: the socket is bound while ztproxy may still hold
    // privileges (a port below 1024), the thread starts once they are dropped (a thread that
    // exists before would keep its own capabilities).
    static Result<std::unique_ptr<AdminServer>> bind(const SocketAddress& address, MetricsRenderer metrics,
                                                     ReloadHandler reload = {});
    void start();
    ~AdminServer();

    SocketAddress address() const { return address_; }
    void set_ready(bool ready) { ready_.store(ready, std::memory_order_relaxed); }

private:
    AdminServer() = default;
    void run();
    void serve(int fd);

    UniqueFd listen_;
    UniqueFd stop_;  // eventfd: the destructor wakes the thread
    SocketAddress address_;
    MetricsRenderer metrics_;
    ReloadHandler reload_;
    std::atomic<bool> ready_{true};
    std::thread thread_;
};

}  // namespace ztp::app
