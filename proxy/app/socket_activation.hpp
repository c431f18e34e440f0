// Socket activation (sd_listen_fds(3)): listening sockets handed to ztproxy by systemd (a .socket
// unit) or anything else speaking the LISTEN_FDS protocol. An inherited socket replaces binding
// for the listener it belongs to:
//
//   * by name: FileDescriptorName= equal to a [[listener]] name (the address must agree too);
//   * else by address: the address the socket is bound to (getsockname) equals a listener's.
//
// Every inherited socket must belong to exactly one listener, or ztproxy refuses to start (a
// socket no listener claims would queue connections nobody serves). Listeners without an
// inherited socket bind their own as usual.
//
// Trade-off: one inherited socket is one accept queue, shared by every worker (each multishot-
// accepts a dup of it), instead of one SO_REUSEPORT socket per worker. The kernel wakes the
// workers in turn rather than hashing connections across them, and BPF steering
// (SO_ATTACH_REUSEPORT_EBPF) has no group to steer in. In exchange the socket outlives the
// process: connections that arrive during a restart wait in the backlog instead of being refused.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config/policy.hpp"
#include "proxy/base/socket_address.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::app {

struct InheritedSocket {
    UniqueFd fd;
    std::string name;       // FileDescriptorName=, "unknown" when the sender named none
    SocketAddress address;  // getsockname
};

// The sockets passed to this process ($LISTEN_PID is ours), each checked to be a listening TCP
// socket; none when there are none. Clears the LISTEN_* variables. Problems are appended.
std::vector<InheritedSocket> take_inherited_sockets(std::vector<std::string>& problems);

// For each listener, the index of its inherited socket (see the rules above). Every socket no
// listener claims, and every disagreement between a socket's name and address, is a problem.
std::vector<std::optional<size_t>> assign_inherited_sockets(const std::vector<config::Listener>& listeners,
                                                            const std::vector<InheritedSocket>& sockets,
                                                            std::vector<std::string>& problems);

}  // namespace ztp::app
