#include "proxy/app/socket_activation.hpp"

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>
#include <memory>

namespace ztp::app {

namespace {

// sd_listen_fds_with_names hands over a malloc'ed array of malloc'ed strings.
struct NameList {
    char** names = nullptr;
    ~NameList() {
        if (!names) return;
        for (char** n = names; *n; ++n) std::free(*n);
        std::free(names);
    }
};

std::string describe(int fd, const InheritedSocket& s) {
    return "inherited socket fd " + std::to_string(fd) + " ('" + s.name + "', bound to " + s.address.to_string() +
           ")";
}

}  // namespace

std::vector<InheritedSocket> take_inherited_sockets(std::vector<std::string>& problems) {
    std::vector<InheritedSocket> out;
    NameList names;
    // unset_environment = 1: the variables describe this process only; nothing it might start
    // (it starts nothing) should believe they are meant for it.
    int n = sd_listen_fds_with_names(1, &names.names);
    if (n < 0) {
        problems.push_back(std::string("socket activation: bad LISTEN_FDS/LISTEN_PID: ") + std::strerror(-n));
        return out;
    }
    for (int i = 0; i < n; ++i) {
        const int fd = SD_LISTEN_FDS_START + i;
        InheritedSocket s;
        s.fd.reset(fd);  // owned from here, whatever follows: a rejected socket is closed too
        s.name = names.names && names.names[i] ? names.names[i] : "unknown";
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        // Listening (SO_ACCEPTCONN), stream, IPv4 or IPv6: what a [[listener]] binds itself.
        if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) <= 0 ||
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
            problems.push_back("inherited socket fd " + std::to_string(fd) + " ('" + s.name +
                               "') is not a listening TCP socket");
            continue;
        }
        s.address = SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
        out.push_back(std::move(s));
    }
    return out;
}

std::vector<std::optional<size_t>> assign_inherited_sockets(const std::vector<config::Listener>& listeners,
                                                            const std::vector<InheritedSocket>& sockets,
                                                            std::vector<std::string>& problems) {
    std::vector<std::optional<size_t>> assigned(listeners.size());
    for (size_t si = 0; si < sockets.size(); ++si) {
        const InheritedSocket& s = sockets[si];
        std::optional<size_t> owner;
        for (size_t li = 0; li < listeners.size() && !owner; ++li)
            if (listeners[li].name == s.name) owner = li;
        if (owner && !(listeners[*owner].address == s.address)) {
            problems.push_back(describe(s.fd.get(), s) + " is named like listener '" + listeners[*owner].name +
                               "', whose address is " + listeners[*owner].address.to_string());
            continue;
        }
        for (size_t li = 0; li < listeners.size() && !owner; ++li)
            if (listeners[li].address == s.address) owner = li;
        if (!owner) {
            std::string known;
            for (const auto& l : listeners)
                known += (known.empty() ? "" : ", ") + ("'" + l.name + "' " + l.address.to_string());
            problems.push_back(describe(s.fd.get(), s) + " matches no [[listener]] by name or address (listeners: " +
                               known + ")");
            continue;
        }
        if (assigned[*owner]) {
            problems.push_back(describe(s.fd.get(), s) + ": listener '" + listeners[*owner].name +
                               "' already has inherited socket fd " +
                               std::to_string(sockets[*assigned[*owner]].fd.get()));
            continue;
        }
        assigned[*owner] = si;
    }
    return assigned;
}

}  // namespace ztp::app
