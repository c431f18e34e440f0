#include "proxy/app/admin_server.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "proxy/app/admin_request.hpp"
#include "proxy/base/log.hpp"

namespace ztp::app {

namespace {

constexpr size_t kMaxRequest = 8192;
constexpr int kRequestTimeoutMs = 2000;

void respond(int fd, const char* status, const char* type, const std::string& body) {
    std::string r = std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + type +
                    "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    size_t off = 0;
    while (off < r.size()) {
        ssize_t n = ::send(fd, r.data() + off, r.size() - off, MSG_NOSIGNAL);
        if (n <= 0) return;
        off += static_cast<size_t>(n);
    }
}

}  // namespace

Result<std::unique_ptr<AdminServer>> AdminServer::bind(const SocketAddress& address, MetricsRenderer metrics,
                                                       ReloadHandler reload) {
    std::unique_ptr<AdminServer> s(new AdminServer());
    s->metrics_ = std::move(metrics);
    s->reload_ = std::move(reload);
    s->listen_.reset(::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s->listen_) return errno_error("admin socket");
    int one = 1;
    setsockopt(s->listen_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(s->listen_.get(), address.sa(), address.len()) != 0) return errno_error("admin bind");
    if (::listen(s->listen_.get(), 64) != 0) return errno_error("admin listen");
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(s->listen_.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    s->address_ = SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    s->stop_.reset(::eventfd(0, EFD_CLOEXEC));
    if (!s->stop_) return errno_error("admin eventfd");
    return s;
}

void AdminServer::start() { thread_ = std::thread([this] { run(); }); }

AdminServer::~AdminServer() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_.get(), &one, sizeof one);
    if (thread_.joinable()) thread_.join();
}

void AdminServer::run() {
    for (;;) {
        pollfd p[2] = {{listen_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (p[1].revents) return;
        UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (c) serve(c.get());
    }
}

void AdminServer::serve(int fd) {
    timeval tv{kRequestTimeoutMs / 1000, (kRequestTimeoutMs % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string req;
    char buf[1024];
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < kMaxRequest) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return;  // slow or gone: an admin port owes nobody a wait
        req.append(buf, static_cast<size_t>(n));
    }
    auto parsed = parse_admin_request(req);
    if (!parsed) return respond(fd, "400 Bad Request", "text/plain", "bad request\n");
    const std::string& method = parsed->method;
    const std::string& path = parsed->path;
    if (path == "/reload") {
        // POST only: a reload changes what the proxy serves; a crawler's GET must not trigger one.
        if (method != "POST") return respond(fd, "405 Method Not Allowed", "text/plain", "POST only\n");
        if (!reload_)
            return respond(fd, "409 Conflict", "text/plain", "nothing to reload: ztproxy was not started with -c FILE\n");
        auto reply = reload_();
        return respond(fd, reply.applied ? "200 OK" : "409 Conflict", "text/plain", reply.text + "\n");
    }
    if (method != "GET") return respond(fd, "405 Method Not Allowed", "text/plain", "GET only\n");
    if (path == "/metrics") return respond(fd, "200 OK", "text/plain; version=0.0.4", metrics_());
    if (path == "/healthz") return respond(fd, "200 OK", "text/plain", "ok\n");
    if (path == "/ready") {
        if (ready_.load(std::memory_order_relaxed)) return respond(fd, "200 OK", "text/plain", "ready\n");
        return respond(fd, "503 Service Unavailable", "text/plain", "draining\n");
    }
    respond(fd, "404 Not Found", "text/plain", "not found: /metrics, /healthz, /ready, POST /reload\n");
}

}  // namespace ztp::app
