// The policy's listeners, bound before anything is served: one SO_REUSEPORT socket per worker and
// listener, admission attached before listen() (so no SYN arrives unjudged), and, with several
// workers, the SK_REUSEPORT steering program choosing among them. A listener systemd handed a
// socket to (socket_activation.hpp) uses that one instead, shared by every worker: no steering,
// and admission attached to a socket that already listens.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bpf/steering.hpp"
#include "proxy/base/result.hpp"
#include "proxy/base/socket_address.hpp"
#include "proxy/base/unique_fd.hpp"
#include "proxy/conn/listener_admission.hpp"
#include "proxy/conn/runtime.hpp"

namespace ztp::app {

struct OpenListener {
    std::string name;
    SocketAddress address;             // with the real port when the policy said port 0
    std::vector<UniqueFd> worker_fds;  // [worker]; moved into the workers
    std::shared_ptr<conn::ListenerAdmission> admission;
    std::unique_ptr<bpf::Steering> steering;  // null: the kernel's default hash spreads connections
    bool inherited = false;            // socket activation: one socket, a descriptor per worker
};

// Error: a message naming the listener and the address.
Result<std::vector<OpenListener>> open_listeners(const conn::Runtime& runtime, unsigned workers);

}  // namespace ztp::app
