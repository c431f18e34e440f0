// The demo's embedded HTTP/1.1 backend. See demo_backend.hpp for what it answers.
//
// One thread, one poll() loop, non-blocking sockets. Per connection: an input buffer bounded by
// kMaxHeaderBytes (+ one read), an output buffer holding at most one response. Input is not read
// while a response is still being written, which is the back-pressure for pipelining clients.
// Errors close that connection only; a client that sent something we cannot parse gets a 400 and
// a lingering close (shutdown(WR), discard input for a while) so that the 400 is not destroyed by
// an RST caused by unread input.
#include "proxy/app/demo_backend.hpp"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace ztp::app {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr size_t kMaxHeaderBytes = 16 * 1024;  // request line + headers
constexpr size_t kMaxHeaders = 100;
constexpr uint64_t kMaxBodyBytes = 1 << 20;    // request bodies are read and discarded
constexpr size_t kReadChunk = 16 * 1024;
constexpr auto kIdleTimeout = 30s;             // no progress in either direction → close
constexpr auto kLingerTimeout = 2s;            // after an error response: discard input this long
constexpr size_t kLingerMaxBytes = 1 << 20;
constexpr auto kAcceptBackoff = 100ms;         // after EMFILE/ENFILE/ENOBUFS/ENOMEM

struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
    bool close = false;
    bool head = false;  // HEAD: headers only
};

struct Conn {
    UniqueFd fd;
    std::string peer;
    std::string in;         // received, not yet consumed
    std::string out;        // response being written
    size_t out_off = 0;
    uint64_t body_left = 0;      // bytes of the current request body still to discard
    bool close_after_write = false;
    bool lingering = false;      // write side shut down, discarding input until EOF/deadline
    size_t lingered = 0;
    bool dead = false;
    Clock::time_point deadline;
};

const char* reason_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

std::string html_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
        }
    }
    return out;
}

bool is_tchar(char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Does the comma-separated header value contain `token` (case-insensitive)?
bool has_token(std::string_view value, std::string_view token) {
    while (!value.empty()) {
        size_t comma = value.find(',');
        std::string_view item = trim_ows(value.substr(0, comma));
        if (iequals(item, token)) return true;
        if (comma == std::string_view::npos) break;
        value.remove_prefix(comma + 1);
    }
    return false;
}

Response error_response(int status) {
    Response r;
    r.status = status;
    r.body = std::to_string(status) + " " + reason_phrase(status) + "\n";
    r.close = true;
    return r;
}

std::string serialize(const Response& r) {
    std::string s = "HTTP/1.1 " + std::to_string(r.status) + " " + reason_phrase(r.status) +
                    "\r\nServer: ztproxy-demo-backend\r\nContent-Type: " + r.content_type +
                    "\r\nContent-Length: " + std::to_string(r.body.size()) +
                    "\r\nCache-Control: no-store\r\nConnection: " +
                    (r.close ? "close" : "keep-alive") + "\r\n";
    if (r.status == 405) s += "Allow: GET, HEAD\r\n";
    s += "\r\n";
    if (!r.head) s += r.body;
    return s;
}

struct Request {
    std::string_view method, target, version;
    std::vector<std::pair<std::string_view, std::string_view>> headers;
};

std::string demo_page(const Request& req, const std::string& peer) {
    std::string p =
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>ztproxy demo backend</title>"
        "</head>\n<body>\n<h1>ztproxy demo backend</h1>\n"
        "<p>This page comes from the plaintext demo backend; ztproxy terminated TLS in front of "
        "it.</p>\n<h2>Request</h2>\n<pre>";
    p += html_escape(req.method);
    p += ' ';
    p += html_escape(req.target);
    p += ' ';
    p += html_escape(req.version);
    p += "</pre>\n<p>Connection from ";
    p += html_escape(peer);
    p += "</p>\n<h2>Headers received</h2>\n<table>\n";
    for (const auto& [name, value] : req.headers) {
        p += "<tr><th>";
        p += html_escape(name);
        p += "</th><td>";
        p += html_escape(value);
        p += "</td></tr>\n";
    }
    p += "</table>\n</body></html>\n";
    return p;
}

// Parses one request head (request line + header lines, no final empty line; lines may end in
// CRLF or LF) and decides the response. `body_len` receives the Content-Length to discard.
Response handle_head(std::string_view head, const std::string& peer, uint64_t& body_len) {
    body_len = 0;
    std::vector<std::string_view> lines;
    while (!head.empty()) {
        size_t nl = head.find('\n');
        std::string_view line = head.substr(0, nl);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        lines.push_back(line);
        if (nl == std::string_view::npos) break;
        head.remove_prefix(nl + 1);
    }
    if (lines.empty()) return error_response(400);

    Request req;
    std::string_view rl = lines[0];
    size_t sp1 = rl.find(' ');
    size_t sp2 = sp1 == std::string_view::npos ? sp1 : rl.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || rl.find(' ', sp2 + 1) != std::string_view::npos)
        return error_response(400);
    req.method = rl.substr(0, sp1);
    req.target = rl.substr(sp1 + 1, sp2 - sp1 - 1);
    req.version = rl.substr(sp2 + 1);
    if (!is_token(req.method) || req.target.empty()) return error_response(400);
    for (char c : req.target)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return error_response(400);
    bool http10 = false;
    if (req.version == "HTTP/1.0") {
        http10 = true;
    } else if (req.version != "HTTP/1.1") {
        bool looks_http = req.version.size() == 8 && req.version.substr(0, 5) == "HTTP/" &&
                          req.version[6] == '.';
        return error_response(looks_http ? 505 : 400);
    }
    if (req.target.front() != '/') return error_response(400);  // origin-form only

    if (lines.size() - 1 > kMaxHeaders) return error_response(431);
    bool have_host = false, conn_close = http10, have_length = false;
    for (size_t i = 1; i < lines.size(); ++i) {
        std::string_view line = lines[i];
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) return error_response(400);  // also obs-fold
        std::string_view name = line.substr(0, colon);
        std::string_view value = trim_ows(line.substr(colon + 1));
        if (!is_token(name)) return error_response(400);
        for (char c : value) {
            unsigned char u = static_cast<unsigned char>(c);
            if ((u < 0x20 && c != '\t') || u == 0x7f) return error_response(400);
        }
        req.headers.emplace_back(name, value);
        if (iequals(name, "host")) {
            if (have_host) return error_response(400);
            have_host = true;
        } else if (iequals(name, "connection")) {
            if (has_token(value, "close")) conn_close = true;
            else if (has_token(value, "keep-alive")) conn_close = false;
        } else if (iequals(name, "transfer-encoding")) {
            return error_response(501);  // cannot frame the body: answer and close
        } else if (iequals(name, "content-length")) {
            if (value.empty() || value.size() > 19 ||
                !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
                return error_response(400);
            uint64_t n = std::stoull(std::string(value));
            if (have_length && n != body_len) return error_response(400);
            have_length = true;
            body_len = n;
        }
    }
    if (!http10 && !have_host) return error_response(400);  // RFC 9112 §3.2
    if (body_len > kMaxBodyBytes) return error_response(413);

    Response r;
    r.close = conn_close;
    r.head = req.method == "HEAD";
    std::string_view path = req.target.substr(0, req.target.find('?'));
    bool known = path == "/" || path == "/health";
    if (!known) {
        r.status = 404;
        r.body = "404 Not Found\n";
    } else if (req.method != "GET" && req.method != "HEAD") {
        r.status = 405;
        r.body = "405 Method Not Allowed\n";
    } else if (path == "/health") {
        r.body = "ok\n";
    } else {
        r.content_type = "text/html; charset=utf-8";
        r.body = demo_page(req, peer);
    }
    return r;
}

// Can `in` (no complete head yet) still become a request line? Its first bytes must be a method
// token followed by a space.
bool plausible_method_prefix(std::string_view in) {
    for (char c : in) {
        if (c == ' ') return true;
        if (!is_tchar(c)) return false;
    }
    return true;
}

// Finds the end of the request head: returns {head length, total length incl. the empty line}.
std::optional<std::pair<size_t, size_t>> find_head_end(const std::string& in) {
    size_t pos = 0;
    while (true) {
        size_t nl = in.find('\n', pos);
        if (nl == std::string::npos) return std::nullopt;
        size_t next = nl + 1;
        if (next < in.size() && in[next] == '\n') return std::make_pair(nl, next + 1);
        if (next + 1 < in.size() && in[next] == '\r' && in[next + 1] == '\n')
            return std::make_pair(nl, next + 2);
        if (next >= in.size() || (in[next] == '\r' && next + 1 >= in.size()))
            return std::nullopt;  // need more input to decide
        pos = next;
    }
}

class Server {
public:
    Server(int listen_fd, int wake_fd) : listen_fd_(listen_fd), wake_fd_(wake_fd) {}

    void run() {
        std::vector<pollfd> pfds;
        std::vector<Conn*> polled;
        while (true) {
            try {
                if (!step(pfds, polled)) return;
            } catch (...) {
                // Out of memory or similar: drop the clients, keep the listener.
                conns_.clear();
            }
        }
    }

private:
    // One poll round. Returns false when asked to stop.
    bool step(std::vector<pollfd>& pfds, std::vector<Conn*>& polled) {
        auto now = Clock::now();
        pfds.clear();
        polled.clear();
        pfds.push_back({wake_fd_, POLLIN, 0});
        bool accepting = conns_.size() < DemoBackend::kMaxConnections && now >= accept_pause_until_;
        pfds.push_back({listen_fd_, static_cast<short>(accepting ? POLLIN : 0), 0});
        auto next_deadline = now + kIdleTimeout;
        if (!accepting && conns_.size() < DemoBackend::kMaxConnections)
            next_deadline = std::min(next_deadline, accept_pause_until_);
        for (auto& c : conns_) {
            short ev = 0;
            bool writing = c.out_off < c.out.size();
            if (writing) ev |= POLLOUT;
            if (!writing || c.lingering) ev |= POLLIN;
            pfds.push_back({c.fd.get(), ev, 0});
            polled.push_back(&c);
            next_deadline = std::min(next_deadline, c.deadline);
        }
        auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(next_deadline - now);
        int timeout = static_cast<int>(std::clamp<int64_t>(wait_ms.count() + 1, 0, 60'000));
        int n = ::poll(pfds.data(), pfds.size(), timeout);
        if (n < 0 && errno != EINTR) return false;  // EFAULT/EINVAL: cannot continue sanely
        if (n < 0) return true;
        if (pfds[0].revents) return false;
        now = Clock::now();
        if (pfds[1].revents & POLLIN) accept_all(now);
        for (size_t i = 0; i < polled.size(); ++i) {
            Conn& c = *polled[i];
            short re = pfds[i + 2].revents;
            try {
                if (re) on_event(c, re, now);
            } catch (...) {
                c.dead = true;
            }
            if (!c.dead && now >= c.deadline) c.dead = true;  // idle or linger time is up
        }
        conns_.remove_if([](const Conn& c) { return c.dead; });
        return true;
    }

    void accept_all(Clock::time_point now) {
        while (conns_.size() < DemoBackend::kMaxConnections) {
            sockaddr_storage ss{};
            socklen_t len = sizeof(ss);
            int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                    accept_pause_until_ = now + kAcceptBackoff;  // else poll spins on the backlog
                return;  // EAGAIN or an error we cannot fix here
            }
            Conn& c = conns_.emplace_back();
            c.fd.reset(fd);
            c.peer = SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len).to_string();
            c.deadline = now + kIdleTimeout;
        }
    }

    void on_event(Conn& c, short re, Clock::time_point now) {
        if (re & (POLLERR | POLLNVAL)) {
            c.dead = true;
            return;
        }
        if (re & POLLOUT) {
            if (!flush(c, now)) return;
            process(c, now);  // pipelined requests already buffered
            if (c.dead || c.out_off < c.out.size()) return;
        }
        if (re & (POLLIN | POLLHUP)) {
            if (!c.lingering && c.out_off < c.out.size()) return;  // still writing: back-pressure
            char buf[kReadChunk];
            ssize_t n;
            do {
                n = ::recv(c.fd.get(), buf, sizeof(buf), 0);
            } while (n < 0 && errno == EINTR);
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK) c.dead = true;
                return;
            }
            if (n == 0) {  // peer finished sending; anything it still wanted is answered already
                c.dead = true;
                return;
            }
            if (c.lingering) {
                c.lingered += static_cast<size_t>(n);
                if (c.lingered > kLingerMaxBytes) c.dead = true;
                return;
            }
            c.deadline = now + kIdleTimeout;
            c.in.append(buf, static_cast<size_t>(n));
            process(c, now);
        }
    }

    // Writes pending output. Returns true when all of it is written and the connection stays open
    // for more requests; false while output is pending, or when it died or went into lingering.
    bool flush(Conn& c, Clock::time_point now) {
        while (c.out_off < c.out.size()) {
            ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off,
                               MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
            if (n <= 0) {
                c.dead = true;
                return false;
            }
            c.out_off += static_cast<size_t>(n);
            c.deadline = now + kIdleTimeout;
        }
        c.out.clear();
        c.out_off = 0;
        if (c.close_after_write) {
            ::shutdown(c.fd.get(), SHUT_WR);
            c.lingering = true;
            c.in.clear();
            c.deadline = now + kLingerTimeout;
            return false;
        }
        return true;
    }

    // Consumes buffered input: discards request bodies, answers complete request heads one at a
    // time (the next one only after the previous response is fully written).
    void process(Conn& c, Clock::time_point now) {
        while (!c.dead && !c.lingering && !c.close_after_write && c.out.empty()) {
            if (c.body_left > 0) {
                size_t take = static_cast<size_t>(std::min<uint64_t>(c.body_left, c.in.size()));
                c.in.erase(0, take);
                c.body_left -= take;
                if (c.body_left > 0) return;
            }
            // RFC 9112 §2.2: ignore empty lines before a request line.
            size_t skip = 0;
            while (skip < c.in.size() && (c.in[skip] == '\r' || c.in[skip] == '\n')) ++skip;
            c.in.erase(0, skip);
            if (c.in.empty()) return;
            auto end = find_head_end(c.in);
            Response r;
            if (!end && !plausible_method_prefix(c.in)) {
                r = error_response(400);  // e.g. a TLS ClientHello: answer now, not at timeout
            } else if (!end) {
                if (c.in.size() <= kMaxHeaderBytes) return;  // wait for the rest
                r = error_response(431);
            } else if (end->second > kMaxHeaderBytes) {
                r = error_response(431);
            } else {
                uint64_t body_len = 0;
                r = handle_head(std::string_view(c.in).substr(0, end->first), c.peer, body_len);
                c.in.erase(0, end->second);
                if (!r.close) c.body_left = body_len;
            }
            c.out = serialize(r);
            c.out_off = 0;
            c.close_after_write = r.close;
            if (!flush(c, now)) return;
        }
    }

    int listen_fd_;
    int wake_fd_;
    std::list<Conn> conns_;  // stable addresses while polled
    Clock::time_point accept_pause_until_{};
};

}  // namespace

Result<std::unique_ptr<DemoBackend>> DemoBackend::start() {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) return errno_error("demo backend: socket");
    auto addr = SocketAddress::parse("127.0.0.1:0");
    if (!addr) return Error{EINVAL, "demo backend: bad bind address"};
    if (::bind(fd.get(), addr->sa(), addr->len()) != 0) return errno_error("demo backend: bind");
    if (::listen(fd.get(), 128) != 0) return errno_error("demo backend: listen");
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        return errno_error("demo backend: getsockname");
    UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake) return errno_error("demo backend: eventfd");

    std::unique_ptr<DemoBackend> b(new (std::nothrow) DemoBackend());
    if (!b) return Error{ENOMEM, "demo backend: out of memory"};
    b->listen_fd_ = std::move(fd);
    b->wake_fd_ = std::move(wake);
    b->address_ = SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    try {
        b->thread_ = std::thread([p = b.get()] { p->run(); });
    } catch (const std::system_error& e) {
        return Error{e.code().value(), "demo backend: starting the server thread failed"};
    }
    return b;
}

void DemoBackend::run() noexcept {
    try {
        Server server(listen_fd_.get(), wake_fd_.get());
        server.run();
    } catch (...) {
        // Server::run contains its own failures; this only keeps std::terminate away.
    }
}

DemoBackend::~DemoBackend() {
    if (thread_.joinable()) {
        uint64_t one = 1;
        ssize_t n;
        do {
            n = ::write(wake_fd_.get(), &one, sizeof(one));
        } while (n < 0 && errno == EINTR);
        thread_.join();
    }
}

}  // namespace ztp::app
