#include "proxy/app/listeners.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "proxy/app/socket_activation.hpp"
#include "proxy/base/log.hpp"

namespace ztp::app {

namespace {

Result<UniqueFd> bound_socket(const SocketAddress& addr) {
    UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return errno_error("socket");
    int one = 1;
    // SO_REUSEPORT: one socket per worker on the same address; the kernel (or the steering
    // program) spreads new connections between them, so workers never contend on one accept queue.
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) return errno_error("SO_REUSEPORT");
    if (addr.family() == AF_INET6) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(fd.get(), addr.sa(), addr.len()) != 0) return errno_error("bind");
    return fd;
}

SocketAddress bound_address(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    return SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

// Steering is an optimisation (session-cache locality per client address): without it the kernel's
// own hash still spreads connections, so a failure is logged once and otherwise ignored.
std::unique_ptr<bpf::Steering> steer(const OpenListener& l) {
    static bool logged = false;
    auto st = bpf::Steering::load(l.worker_fds.size());
    if (st) {
        std::vector<int> fds;
        for (const auto& fd : l.worker_fds) fds.push_back(fd.get());
        auto r = (*st)->attach(fds);
        if (r) return std::move(st).value();
        if (!logged) log::main().info("worker steering: {}; the kernel's default hash spreads connections",
                                      r.error().message());
    } else if (!logged) {
        log::main().info("worker steering unavailable ({}); the kernel's default hash spreads connections",
                         st.error().message());
    }
    logged = true;
    return nullptr;
}

// Every worker accepts on the one inherited socket through its own descriptor: a worker closes
// its descriptor when it drains, and the socket itself stays with systemd.
Result<void> share_inherited(InheritedSocket& s, unsigned workers, OpenListener& ol) {
    log::main().info("listener '{}': using inherited socket fd {} ('{}'), shared by {} worker(s)", ol.name,
                     s.fd.get(), s.name, workers);
    ol.address = s.address;
    ol.inherited = true;
    for (unsigned w = 1; w < workers; ++w) {
        UniqueFd dup(::fcntl(s.fd.get(), F_DUPFD_CLOEXEC, 0));
        if (!dup) return errno_error("dup of an inherited socket");
        ol.worker_fds.push_back(std::move(dup));
    }
    ol.worker_fds.insert(ol.worker_fds.begin(), std::move(s.fd));
    return {};
}

}  // namespace

Result<std::vector<OpenListener>> open_listeners(const conn::Runtime& runtime, unsigned workers) {
    std::vector<config::Listener> configs;
    for (const auto& lr : runtime.listeners()) configs.push_back(*lr.config);
    std::vector<std::string> problems;
    auto inherited = take_inherited_sockets(problems);
    auto assigned = assign_inherited_sockets(configs, inherited, problems);
    if (!problems.empty()) {
        for (const auto& p : problems) log::main().error("socket activation: {}", p);
        return Error{EINVAL, "socket activation"};
    }
    std::vector<OpenListener> out;
    for (size_t li = 0; li < configs.size(); ++li) {
        const config::Listener& l = configs[li];
        OpenListener ol{l.name, l.address, {}, nullptr, nullptr};
        if (assigned[li]) {
            if (auto r = share_inherited(inherited[*assigned[li]], workers, ol); !r) return r.error();
            std::vector<int> fds;
            for (const auto& fd : ol.worker_fds) fds.push_back(fd.get());
            ol.admission = conn::ListenerAdmission::create(l, std::move(fds));
            out.push_back(std::move(ol));
            continue;
        }
        for (unsigned w = 0; w < workers; ++w) {
            auto fd = bound_socket(ol.address);
            if (!fd) {
                log::main().error("listener '{}': cannot bind {}: {}", l.name, ol.address.to_string(),
                                  fd.error().message());
                return fd.error();
            }
            // Port 0: the first socket picks the port, the other workers join it.
            if (w == 0) ol.address = bound_address(fd->get());
            ol.worker_fds.push_back(std::move(fd).value());
        }
        std::vector<int> fds;
        for (const auto& fd : ol.worker_fds) fds.push_back(fd.get());
        ol.admission = conn::ListenerAdmission::create(l, std::move(fds));
        for (const auto& fd : ol.worker_fds) {
            if (::listen(fd.get(), SOMAXCONN) != 0) {
                auto e = errno_error("listen");
                log::main().error("listener '{}': cannot listen on {}: {}", l.name, ol.address.to_string(),
                                  e.message());
                return e;
            }
        }
        // The kernel takes only listening sockets into a reuseport group's socket array.
        if (workers > 1) ol.steering = steer(ol);
        out.push_back(std::move(ol));
    }
    return out;
}

}  // namespace ztp::app
