#include "proxy/app/listen_sockets.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "proxy/app/socket_activation.hpp"
#include "proxy/base/log.hpp"

namespace ztp::app {

namespace {

Result<UniqueFd> listen_socket(const SocketAddress& addr) {
    UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return errno_error("socket");
    int one = 1;
    // SO_REUSEPORT: one socket per worker on the same address; the kernel load-balances
    // new connections between them, so workers never contend on one accept queue.
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) return errno_error("SO_REUSEPORT");
    if (addr.family() == AF_INET6) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(fd.get(), addr.sa(), addr.len()) != 0) return errno_error("bind");
    if (::listen(fd.get(), SOMAXCONN) != 0) return errno_error("listen");
    return fd;
}

SocketAddress bound_address(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    return SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

// Every worker accepts on the one inherited socket through its own descriptor: a worker closes
// its descriptor when it drains, and the socket itself stays with systemd.
bool share_inherited(InheritedSocket& s, size_t li, OpenListeners& out) {
    for (size_t w = 1; w < out.per_worker.size(); ++w) {
        UniqueFd dup(::fcntl(s.fd.get(), F_DUPFD_CLOEXEC, 0));
        if (!dup) {
            log::main().error("inherited socket fd {}: dup: {}", s.fd.get(), std::strerror(errno));
            return false;
        }
        out.per_worker[w].push_back({li, std::move(dup)});
    }
    out.per_worker[0].push_back({li, std::move(s.fd)});
    return true;
}

}  // namespace

std::optional<OpenListeners> open_listeners(const conn::Runtime& runtime, unsigned workers) {
    std::vector<config::Listener> configs;
    for (const auto& l : runtime.listeners()) configs.push_back(*l.config);
    std::vector<std::string> problems;
    auto inherited = take_inherited_sockets(problems);
    auto assigned = assign_inherited_sockets(configs, inherited, problems);
    if (!problems.empty()) {
        for (const auto& p : problems) log::main().error("socket activation: {}", p);
        return std::nullopt;
    }
    OpenListeners out;
    out.per_worker.resize(workers);
    for (size_t li = 0; li < configs.size(); ++li) {
        const auto& l = configs[li];
        if (assigned[li]) {
            InheritedSocket& s = inherited[*assigned[li]];
            log::main().info("listener '{}': using inherited socket fd {} ('{}'), shared by {} worker(s)", l.name,
                             s.fd.get(), s.name, workers);
            out.bound.push_back({l.name, s.address, true});
            if (!share_inherited(s, li, out)) return std::nullopt;
            continue;
        }
        SocketAddress addr = l.address;
        for (unsigned w = 0; w < workers; ++w) {
            auto fd = listen_socket(addr);
            if (!fd) {
                log::main().error("listener '{}': cannot listen on {}: {}", l.name, addr.to_string(),
                                  fd.error().message());
                return std::nullopt;
            }
            // Port 0: the first socket picks the port, the other workers join it.
            if (w == 0) addr = bound_address(fd->get());
            out.per_worker[w].push_back({li, std::move(fd).value()});
        }
        out.bound.push_back({l.name, addr, false});
    }
    return out;
}

}  // namespace ztp::app
