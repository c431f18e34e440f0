// Runs the proxy from a policy until SIGTERM/SIGINT. Shared by `run -c`, quick mode and `demo`.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "config/policy.hpp"
#include "proxy/base/socket_address.hpp"

namespace ztp::app {

struct BoundListener {
    std::string name;
    SocketAddress address;  // with the real port when the policy said port 0
    bool inherited = false;  // handed over by systemd (socket activation), not bound by ztproxy
};

// Called once every listener is bound (before connections are served), e.g. to print a URL.
using ListeningCallback = std::function<void(const std::vector<BoundListener>&)>;

// SIGHUP / POST /reload: produces the next policy (re-read from its file, command-line overrides
// applied), or nothing, with the problems ("file:line:col: message") appended. Without one,
// SIGHUP is logged and ignored.
using PolicySource = std::function<std::optional<config::Policy>(std::vector<std::string>& problems)>;

struct RunOptions {
    ListeningCallback on_listening;
    PolicySource reload;
    std::optional<SocketAddress> admin;  // /metrics, /healthz, /ready, POST /reload; wins over [admin]
};

// Returns the process exit code: 0 after a clean shutdown, 1 when the policy or sockets fail.
int run_policy(config::Policy policy, const RunOptions& options = {});

}  // namespace ztp::app
