// DemoBackend over real loopback sockets: pages, keep-alive, pipelining, bad requests, clients that
// vanish, partial writes from the client.
#include "proxy/app/demo_backend.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

namespace {

using namespace ztp;

std::unique_ptr<app::DemoBackend> start_backend() {
    auto r = app::DemoBackend::start();
    EXPECT_TRUE(r.ok()) << r.error().message();
    if (!r.ok()) return nullptr;
    return std::move(r).value();
}

UniqueFd connect_to(const SocketAddress& addr) {
    UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fd;
    timeval tv{5, 0};  // no test may hang on a silent server
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (::connect(fd.get(), addr.sa(), addr.len()) != 0) fd.reset();
    return fd;
}

bool send_all(int fd, std::string_view s) {
    while (!s.empty()) {
        ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
        if (n <= 0) return false;
        s.remove_prefix(static_cast<size_t>(n));
    }
    return true;
}

struct HttpResponse {
    int status = 0;
    std::string head;
    std::string body;
    bool close = false;
};

std::string header_value(const std::string& head, const std::string& name) {
    std::string lower_head;
    for (char c : head) lower_head += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string key = "\r\n" + name + ":";
    size_t p = lower_head.find(key);
    if (p == std::string::npos) return {};
    p += key.size();
    size_t e = head.find("\r\n", p);
    std::string v = head.substr(p, e - p);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    return v;
}

// Reads one response (Content-Length framed). `buf` carries bytes read past it to the next call.
std::optional<HttpResponse> read_response(int fd, std::string& buf) {
    char tmp[4096];
    auto fill = [&]() {
        ssize_t n = ::recv(fd, tmp, sizeof(tmp), 0);
        if (n <= 0) return false;
        buf.append(tmp, static_cast<size_t>(n));
        return true;
    };
    size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos)
        if (!fill()) return std::nullopt;
    HttpResponse r;
    r.head = buf.substr(0, end + 2);
    buf.erase(0, end + 4);
    if (r.head.rfind("HTTP/1.1 ", 0) != 0) return std::nullopt;
    r.status = std::stoi(r.head.substr(9, 3));
    size_t len = std::stoul(header_value(r.head, "content-length"));
    while (buf.size() < len)
        if (!fill()) return std::nullopt;
    r.body = buf.substr(0, len);
    buf.erase(0, len);
    r.close = header_value(r.head, "connection") == "close";
    return r;
}

// True when the server closed the connection (EOF or reset) within the receive timeout.
bool closed_by_server(int fd) {
    char c;
    ssize_t n = ::recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

TEST(DemoBackend, GetRootReturnsPageWithRequestDetails) {
    auto b = start_backend();
    ASSERT_TRUE(b);
    EXPECT_EQ(b->address().ip_string(), "127.0.0.1");
    EXPECT_NE(b->address().port(), 0);
    UniqueFd fd = connect_to(b->address());
    ASSERT_TRUE(fd);
    ASSERT_TRUE(send_all(fd.get(),
                         "GET /?q=1 HTTP/1.1\r\nHost: localhost\r\nX-Probe: <b>&\"x\"</b>\r\n\r\n"));
    std::string buf;
    auto r = read_response(fd.get(), buf);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_NE(r->head.find("text/html"), std::string::npos);
    EXPECT_NE(r->body.find("ztproxy demo backend"), std::string::npos);
    EXPECT_NE(r->body.find("GET /?q=1 HTTP/1.1"), std::string::npos);
    EXPECT_NE(r->body.find("X-Probe"), std::string::npos);
    EXPECT_NE(r->body.find("&lt;b&gt;&amp;&quot;x&quot;&lt;/b&gt;"), std::string::npos);
    EXPECT_EQ(r->body.find("<b>&"), std::string::npos);  // escaped, never raw
    EXPECT_FALSE(r->close);
}

TEST(DemoBackend, HealthAndNotFound) {
    auto b = start_backend();
    ASSERT_TRUE(b);
    UniqueFd fd = connect_to(b->address());
    ASSERT_TRUE(fd);
    std::string buf;
    ASSERT_TRUE(send_all(fd.get(), "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
    auto r = read_response(fd.get(), buf);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "ok\n");
    ASSERT_TRUE(send_all(fd.get(), "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"));
    r = read_response(fd.get(), buf);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    ASSERT_TRUE(send_all(fd.get(), "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"));
    r = read_response(fd.get(), buf);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 405);
    ASSERT_TRUE(send_all(fd.get(), "HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"));
    // HEAD: Content-Length describes the GET body, but no body follows.
    size_t end;
    char tmp[512];
    while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
        ssize_t n = ::recv(fd.get(), tmp, sizeof(tmp), 0);
        ASSERT_GT(n, 0);
        buf.append(tmp, static_cast<size_t>(n));
    }
    EXPECT_EQ(buf.rfind("HTTP/1.1 200", 0), 0u);
    EXPECT_EQ(buf.size(), end + 4);
}

TEST(DemoBackend, KeepAliveServesTwoRequestsOnOneConnection) {
    auto b = start_backend();
    ASSERT_TRUE(b);
    UniqueFd fd = connect_to(b->address());
    ASSERT_TRUE(fd);
    std::string buf;
    for (int i = 0; i < 2; ++i) {
        ASSERT_TRUE(send_all(fd.get(), "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        auto r = read_response(fd.get(), buf);
        ASSERT_TRUE(r) << "request " << i;
        EXPECT_EQ(r->status, 200);
        EXPECT_FALSE(r->close);
    }
    // Connection: close is honoured: response, then EOF.
    ASSERT_TRUE(send_all(fd.get(), "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    auto r = read_response(fd.get(), buf);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_TRUE(r->close);
    EXPECT_TRUE(closed_by_server(fd.get()));
}

TEST(DemoBackend, PipelinedRequestsAreAnsweredInOrder) {
    auto b = start_backend();
    ASSERT_TRUE(b);
    UniqueFd fd = connect_to(b->address());
    ASSERT_TRUE(fd);
    std::string many;
    for (int i = 0; i < 50; ++i)
        many += (i % 2 ? "GET /health HTTP/1.1\r\nHost: x\r\n\r\n" : "GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(send_all(fd.get(), many));
    std::string buf;
    for (int i = 0; i < 50; ++i) {
        auto r = read_response(fd.get(), buf);
        ASSERT_TRUE(r) << "response " << i;
        EXPECT_EQ(r->status, i % 2 ? 200 : 404) << "response " << i;
    }
}

TEST(DemoBackend, RequestSplitIntoSingleBytesIsParsed) {
    auto b = start_backend();
    ASSERT_TRUE(b);
    UniqueFd fd = connect_to(b->address());
    ASSERT_TRUE(fd);
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
    std::string req = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    for (char c : req) ASSERT_TRUE(send_all(fd.get(), std::string_view(&c, 1)));
    std::string buf;
    auto r = read_response(fd.get(), buf);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
}

TEST(DemoBackend, GarbageGets400AndClose) {
    auto b = start_backend();
    ASSERT_TRUE(b);
    const char* bad[] = {
        "\x16\x03\x01",  // the start of a TLS ClientHello: rejected before any newline
        "GET /\r\n\r\n",                                             // HTTP/0.9
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",                                    // no Host
        "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    };
    for (const char* req : bad) {
        UniqueFd fd = connect_to(b->address());
        ASSERT_TRUE(fd);
        ASSERT_TRUE(send_all(fd.get(), req));
        std::string buf;
        auto r = read_response(fd.get(), buf);
        ASSERT_TRUE(r) << req;
        EXPECT_EQ(r->status, 400) << req;
        EXPECT_TRUE(r->close);
        EXPECT_TRUE(closed_by_server(fd.get()));
    }
}

TEST(DemoBackend, OversizedHeadersAreRejected) {
    auto b = start_backend();
    ASSERT_TRUE(b);
    UniqueFd fd = connect_to(b->address());
    ASSERT_TRUE(fd);
    std::string req = "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 * 1024, 'a');
    send_all(fd.get(), req);  // the server may close before reading it all
    std::string buf;
    auto r = read_response(fd.get(), buf);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 431);
}

TEST(DemoBackend, VanishingClientsDoNotBreakTheNextOne) {
    auto b = start_backend();
    ASSERT_TRUE(b);
    for (int i = 0; i < 20; ++i) {
        UniqueFd fd = connect_to(b->address());
        ASSERT_TRUE(fd);
        ASSERT_TRUE(send_all(fd.get(), "GET / HTTP/1.1\r\nHost: loc"));  // half a request
        if (i % 2) {  // and then an RST instead of a FIN
            linger l{1, 0};
            ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        }
    }
    {
        // A client that asks for pages and never reads them, then resets.
        UniqueFd fd = connect_to(b->address());
        ASSERT_TRUE(fd);
        std::string many;
        for (int i = 0; i < 2000; ++i) many += "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        timeval tv{0, 200000};
        ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        send_all(fd.get(), many);
        linger l{1, 0};
        ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    UniqueFd fd = connect_to(b->address());
    ASSERT_TRUE(fd);
    ASSERT_TRUE(send_all(fd.get(), "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    std::string buf;
    auto r = read_response(fd.get(), buf);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
}

TEST(DemoBackend, ManyConcurrentConnections) {
    auto b = start_backend();
    ASSERT_TRUE(b);
    std::vector<UniqueFd> fds;
    for (int i = 0; i < 100; ++i) {
        fds.push_back(connect_to(b->address()));
        ASSERT_TRUE(fds.back());
        ASSERT_TRUE(send_all(fds.back().get(), "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    for (auto& fd : fds) {
        std::string buf;
        auto r = read_response(fd.get(), buf);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 200);
    }
}

TEST(DemoBackend, StopsPromptlyWithOpenConnections) {
    auto b = start_backend();
    ASSERT_TRUE(b);
    SocketAddress addr = b->address();
    UniqueFd idle = connect_to(addr);
    ASSERT_TRUE(idle);
    b.reset();  // joins; must not wait for the idle client
    EXPECT_TRUE(closed_by_server(idle.get()));
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_NE(::connect(fd.get(), addr.sa(), addr.len()), 0);  // listener is gone
}

}  // namespace
