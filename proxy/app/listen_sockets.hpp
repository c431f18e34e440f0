// The listening sockets of a policy, opened before anything is served: for each listener either
// the socket systemd handed over (socket_activation.hpp), shared by every worker, or one
// SO_REUSEPORT socket per worker bound here.
#pragma once

#include <optional>
#include <vector>

#include "proxy/app/run_command.hpp"
#include "proxy/conn/runtime.hpp"
#include "proxy/conn/worker.hpp"

namespace ztp::app {

struct OpenListeners {
    std::vector<std::vector<conn::ListenSocket>> per_worker;  // [worker][listener]
    std::vector<BoundListener> bound;                         // per listener, in policy order
};

// Logs every problem; nullopt means refuse to start (a policy that cannot listen fails whole).
std::optional<OpenListeners> open_listeners(const conn::Runtime& runtime, unsigned workers);

}  // namespace ztp::app
