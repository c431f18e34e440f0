#include "proxy/app/admin_server.hpp"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <sstream>

#include "proxy/app/admin_request.hpp"
#include "proxy/base/log.hpp"

namespace ztp::app {

namespace {

// A reload parses files and builds TLS contexts; it never waits on clients. Past this the
// requester is told to look at the log (the reload itself still finishes).
constexpr auto kReloadTimeout = std::chrono::seconds(60);
// How long accepting pauses when accept4 fails for want of descriptors or memory: the listener
// stays readable, so retrying at once would spin.
constexpr auto kAcceptPause = std::chrono::milliseconds(100);
constexpr int kMaxEvents = 64;

// epoll_event.data.ptr tags for what is not a connection.
char kTagTcp, kTagUnix, kTagStop, kTagReload;

Result<UniqueFd> listen_tcp(const SocketAddress& address) {
    UniqueFd fd(::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return errno_error("admin socket");
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), address.sa(), address.len()) != 0) return errno_error("admin bind");
    if (::listen(fd.get(), 128) != 0) return errno_error("admin listen");
    return fd;
}

// A socket file left by a process that ended without removing it (ztproxy cannot remove its own
// once the seccomp filter is on) is replaced; one another process still accepts on is not, nor
// is anything that is not a socket.
Result<void> remove_stale_socket(const sockaddr_un& sun) {
    struct stat st{};
    if (::lstat(sun.sun_path, &st) != 0) return errno == ENOENT ? Result<void>{} : errno_error("admin unix socket lstat");
    if (!S_ISSOCK(st.st_mode)) return Error{EEXIST, "admin unix socket: the path exists and is not a socket"};
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe) return errno_error("admin unix socket probe");
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&sun), sizeof sun) == 0)
        return Error{EADDRINUSE, "admin unix socket: another process is listening on it"};
    if (errno != ECONNREFUSED) return errno_error("admin unix socket probe connect");
    if (::unlink(sun.sun_path) != 0) return errno_error("admin unix socket: removing the stale socket");
    return {};
}

Result<UniqueFd> listen_unix(const std::string& path, uint32_t mode) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (path.size() >= sizeof sun.sun_path) return Error{ENAMETOOLONG, "admin unix socket path"};
    std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
    if (auto r = remove_stale_socket(sun); !r) return r.error();
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return errno_error("admin unix socket");
    // Linux creates the socket file with the socket inode's mode minus the umask (unix_bind), so
    // narrowing it before bind leaves no moment in which the file is more open than `mode`; the
    // chmod after bind then sets exactly `mode` whatever the umask took away.
    if (::fchmod(fd.get(), mode) != 0) return errno_error("admin unix socket fchmod");
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&sun), sizeof sun) != 0) return errno_error("admin unix bind");
    if (::chmod(sun.sun_path, mode) != 0) return errno_error("admin unix socket chmod");
    if (::listen(fd.get(), 128) != 0) return errno_error("admin unix listen");
    return fd;
}

Result<void> add(int epoll, int fd, void* tag, uint32_t events = EPOLLIN) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = tag;
    if (::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev) != 0) return errno_error("admin epoll_ctl");
    return {};
}

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

ClientMetric sample(uint64_t v, MetricType type, std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric m;
    m.label = std::move(labels);
    if (type == MetricType::Gauge) m.gauge.value = static_cast<double>(v);
    else m.counter.value = static_cast<double>(v);
    return m;
}

}  // namespace

AdminServer::Settings AdminServer::settings_from(const config::Admin& admin) {
    Settings s;
    if (!admin.token.empty()) s.token = AdminToken(admin.token);
    s.metrics_require_token = admin.metrics_require_token;
    s.max_connections = admin.max_connections;
    s.max_request = admin.max_request_bytes;
    s.request_timeout = admin.request_timeout;
    return s;
}

Result<std::unique_ptr<AdminServer>> AdminServer::bind(const Endpoints& endpoints, Settings settings,
                                                       MetricsRenderer metrics, ReloadRequests* reload) {
    std::unique_ptr<AdminServer> s(new AdminServer());
    s->metrics_ = std::move(metrics);
    s->reload_ = reload;
    s->settings_ = s->current_ = std::move(settings);
    // epoll_create1 happens here, before the seccomp filter: serving needs only epoll_ctl/wait.
    s->epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!s->epoll_) return errno_error("admin epoll_create1");
    if (endpoints.tcp) {
        auto fd = listen_tcp(*endpoints.tcp);
        if (!fd) return fd.error();
        s->listen_tcp_ = std::move(fd).value();
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        ::getsockname(s->listen_tcp_.get(), reinterpret_cast<sockaddr*>(&ss), &len);
        s->address_ = SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
        if (auto r = add(s->epoll_.get(), s->listen_tcp_.get(), &kTagTcp); !r) return r.error();
    }
    if (!endpoints.unix_path.empty()) {
        auto fd = listen_unix(endpoints.unix_path, endpoints.unix_mode);
        if (!fd) return fd.error();
        s->listen_unix_ = std::move(fd).value();
        s->unix_path_ = endpoints.unix_path;
        if (auto r = add(s->epoll_.get(), s->listen_unix_.get(), &kTagUnix); !r) return r.error();
    }
    s->stop_.reset(::eventfd(0, EFD_CLOEXEC));
    if (!s->stop_) return errno_error("admin eventfd");
    if (auto r = add(s->epoll_.get(), s->stop_.get(), &kTagStop); !r) return r.error();
    if (reload)
        if (auto r = add(s->epoll_.get(), reload->ready_fd(), &kTagReload); !r) return r.error();
    return s;
}

void AdminServer::start() { thread_ = std::thread([this] { run(); }); }

AdminServer::~AdminServer() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_.get(), &one, sizeof one);
    if (thread_.joinable()) thread_.join();
}

void AdminServer::update(Settings settings) {
    std::lock_guard lock(settings_mu_);
    settings_ = std::move(settings);
}

void AdminServer::run() {
    epoll_event events[kMaxEvents];
    for (;;) {
        {
            std::lock_guard lock(settings_mu_);
            current_ = settings_;
        }
        const int n = ::epoll_wait(epoll_.get(), events, kMaxEvents, next_timeout(Clock::now()));
        if (n < 0) {
            if (errno == EINTR) continue;
            log::main().error("admin endpoint: epoll_wait: {}; the admin endpoint stops", std::strerror(errno));
            return;
        }
        for (int i = 0; i < n; ++i) {
            void* tag = events[i].data.ptr;
            if (tag == &kTagStop) return;
            if (tag == &kTagTcp) {
                accept_all(listen_tcp_.get(), false);
            } else if (tag == &kTagUnix) {
                accept_all(listen_unix_.get(), true);
            } else if (tag == &kTagReload) {
                reload_->clear_ready();
                answer_reloads();
            } else {
                Conn& c = *static_cast<Conn*>(tag);
                // Closed earlier in this batch (evicted): its node lives until the sweep below.
                if (c.state != State::closed) on_event(c, events[i].events);
            }
        }
        const auto now = Clock::now();
        if (accept_paused_until_ && now >= *accept_paused_until_) resume_accepting();
        expire(now);
        conns_.remove_if([](const Conn& c) { return c.state == State::closed; });
    }
}

int AdminServer::next_timeout(Clock::time_point now) const {
    std::optional<Clock::time_point> next = accept_paused_until_;
    for (const auto& c : conns_)
        if (c.state != State::closed && (!next || c.deadline < *next)) next = c.deadline;
    if (!next) return -1;
    if (*next <= now) return 0;
    // Rounded up: waking a millisecond early would only mean another turn with nothing expired.
    return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(*next - now).count());
}

void AdminServer::accept_all(int listen_fd, bool is_unix) {
    for (;;) {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        UniqueFd fd(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!fd) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
            if (auto held = log_limiter_.allow(Clock::now()))
                log::main().warn("admin endpoint: accept: {}; pausing for {} ms", std::strerror(errno),
                                 kAcceptPause.count());
            pause_accepting(Clock::now());
            return;
        }
        ++counters_.accepted;
        if (open_ >= current_.max_connections && !make_room()) {
            ++counters_.full;  // every open connection is being answered: this one waits for nobody
            continue;          // closed by its UniqueFd
        }
        Conn& c = conns_.emplace_back();
        c.fd = std::move(fd);
        c.deadline = Clock::now() + current_.request_timeout;
        c.peer = is_unix ? "unix socket" : SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len).to_string();
        ++open_;
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.ptr = &c;
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c.fd.get(), &ev) != 0) close(c);
    }
}

// Closes the oldest connection still sending its request. False when there is none.
bool AdminServer::make_room() {
    for (auto& c : conns_) {
        if (c.state != State::reading) continue;
        ++counters_.evicted;
        close(c);
        return true;
    }
    return false;
}

void AdminServer::pause_accepting(Clock::time_point now) {
    accept_paused_until_ = now + kAcceptPause;
    epoll_event ev{};
    for (auto* l : {&listen_tcp_, &listen_unix_}) {
        if (!*l) continue;
        ev.events = 0;
        ev.data.ptr = l == &listen_tcp_ ? &kTagTcp : &kTagUnix;
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, l->get(), &ev);
    }
}

void AdminServer::resume_accepting() {
    accept_paused_until_.reset();
    epoll_event ev{};
    for (auto* l : {&listen_tcp_, &listen_unix_}) {
        if (!*l) continue;
        ev.events = EPOLLIN;
        ev.data.ptr = l == &listen_tcp_ ? &kTagTcp : &kTagUnix;
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, l->get(), &ev);
    }
}

bool AdminServer::watch(Conn& c, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = &c;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) == 0) return true;
    close(c);
    return false;
}

void AdminServer::close(Conn& c) {
    if (c.state == State::closed) return;
    if (c.state == State::writing) {
        // Unread request bytes (a body nobody asked for) would turn close() into a reset that can
        // destroy the response in flight: read what is there first.
        char sink[512];
        for (int i = 0; i < 16 && ::recv(c.fd.get(), sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {}
    }
    c.fd.reset();  // also removes it from the epoll set
    c.state = State::closed;
    c.in.clear();
    c.out.clear();
    --open_;
}

void AdminServer::on_event(Conn& c, uint32_t events) {
    if (c.state == State::reading) return read_request(c);
    if (c.state == State::writing) return flush(c);
    // Reloading: the client gave up; the reload still runs, its answer has nobody to go to.
    if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) close(c);
}

void AdminServer::read_request(Conn& c) {
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
        if (n == 0) return close(c);  // gone before finishing its request
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            return close(c);
        }
        const size_t searched = c.in.size() >= 3 ? c.in.size() - 3 : 0;
        c.in.append(buf, static_cast<size_t>(n));
        if (c.in.find("\r\n\r\n", searched) != std::string::npos) {
            if (c.in.size() > current_.max_request) break;
            return handle(c);
        }
        if (c.in.size() > current_.max_request) break;
    }
    ++counters_.too_large;
    respond(c, "431 Request Header Fields Too Large", "request too large\n");
}

void AdminServer::refuse_unauthorized(Conn& c, const char* what) {
    ++counters_.unauthorized;
    // The presented value is never logged: it may be the real token with a typo.
    if (auto held = log_limiter_.allow(Clock::now()))
        log::main().warn("admin endpoint: {} from {} refused: no valid bearer token{}", what, c.peer,
                         *held ? fmt::format(" ({} similar lines suppressed)", *held) : std::string());
    respond(c, "401 Unauthorized", "a bearer token is required\n", "text/plain",
            "WWW-Authenticate: Bearer realm=\"ztproxy-admin\"\r\n");
}

void AdminServer::handle(Conn& c) {
    auto parsed = parse_admin_request(c.in);
    if (!parsed) {
        ++counters_.bad_request;
        return respond(c, "400 Bad Request", "bad request\n");
    }
    const std::string& method = parsed->method;
    const std::string& path = parsed->path;
    if (path == "/reload") {
        // POST only: a reload changes what the proxy serves; a crawler's GET must not trigger one.
        if (method != "POST") return respond(c, "405 Method Not Allowed", "POST only\n");
        if (!current_.token.accepts(parsed->authorization)) return refuse_unauthorized(c, "POST /reload");
        if (!reload_) return respond(c, "409 Conflict", "nothing to reload: ztproxy was not started with -c FILE\n");
        auto submitted = reload_->submit();
        if (submitted.refused) return respond(c, "409 Conflict", "reload rejected\n" + submitted.refused->problems.front() + "\n");
        c.state = State::reloading;
        c.reload_ticket = submitted.ticket;
        c.deadline = Clock::now() + kReloadTimeout;
        watch(c, EPOLLRDHUP);
        return;
    }
    if (method != "GET") return respond(c, "405 Method Not Allowed", "GET only\n");
    if (path == "/metrics") {
        if (current_.metrics_require_token && !current_.token.accepts(parsed->authorization))
            return refuse_unauthorized(c, "GET /metrics");
        return respond(c, "200 OK", render_metrics(), "text/plain; version=0.0.4");
    }
    if (path == "/healthz") return respond(c, "200 OK", "ok\n");
    if (path == "/ready") {
        if (ready_.load(std::memory_order_relaxed)) return respond(c, "200 OK", "ready\n");
        return respond(c, "503 Service Unavailable", "draining\n");
    }
    respond(c, "404 Not Found", "not found: /metrics, /healthz, /ready, POST /reload\n");
}

void AdminServer::answer_reloads() {
    for (auto& c : conns_) {
        if (c.state != State::reloading) continue;
        auto outcome = reload_->outcome(c.reload_ticket);
        if (!outcome) continue;
        std::string text = outcome->applied ? "reload applied" : "reload rejected";
        for (const auto& p : outcome->problems) text += "\n" + p;
        respond(c, outcome->applied ? "200 OK" : "409 Conflict", text + "\n");
    }
}

void AdminServer::respond(Conn& c, const char* status, const std::string& body, const char* type,
                          const char* extra_headers) {
    c.in.clear();
    c.out = std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + type + "\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\n" + extra_headers + "Connection: close\r\n\r\n" + body;
    c.sent = 0;
    const bool was_reloading = c.state == State::reloading;
    c.state = State::writing;
    // The reload wait had its own bound; the answer gets a fresh request deadline to be sent in.
    if (was_reloading) c.deadline = Clock::now() + current_.request_timeout;
    flush(c);
}

void AdminServer::flush(Conn& c) {
    while (c.sent < c.out.size()) {
        const ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            watch(c, EPOLLOUT);
            return;
        }
        if (n <= 0) return close(c);
        c.sent += static_cast<size_t>(n);
    }
    close(c);
}

void AdminServer::expire(Clock::time_point now) {
    for (auto& c : conns_) {
        if (c.state == State::closed || c.deadline > now) continue;
        if (c.state == State::reloading) {
            respond(c, "409 Conflict", "reload rejected\nthe reload did not finish in time; see the log\n");
            continue;
        }
        ++counters_.deadline;
        close(c);
    }
}

std::string AdminServer::render_metrics() {
    using T = MetricType;
    const Counters& k = counters_;
    std::vector<MetricFamily> f;
    f.push_back({"ztproxy_admin_connections", "Open admin endpoint connections", T::Gauge, {sample(open_, T::Gauge)}});
    f.push_back({"ztproxy_admin_connections_total", "Admin endpoint connections accepted", T::Counter,
                 {sample(k.accepted, T::Counter)}});
    f.push_back({"ztproxy_admin_connections_dropped_total",
                 "Admin connections closed unanswered: past the whole-request deadline, evicted at the "
                 "connection cap for a newer one, or refused at the cap (full)",
                 T::Counter,
                 {sample(k.deadline, T::Counter, {{"reason", "deadline"}}),
                  sample(k.evicted, T::Counter, {{"reason", "evicted"}}),
                  sample(k.full, T::Counter, {{"reason", "full"}})}});
    f.push_back({"ztproxy_admin_requests_refused_total", "Admin requests refused, by reason", T::Counter,
                 {sample(k.too_large, T::Counter, {{"reason", "too_large"}}),
                  sample(k.bad_request, T::Counter, {{"reason", "bad_request"}}),
                  sample(k.unauthorized, T::Counter, {{"reason", "unauthorized"}})}});
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, f);
    return metrics_() + out.str();
}

}  // namespace ztp::app
