// Helpers for in-process relay tests: a proxy (Runtime + Worker) on a real port-0 listener, a
// scriptable plaintext backend, and a blocking OpenSSL client that verifies the proxy's chain.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "proxy/app/demo_certs.hpp"
#include "proxy/base/c_deleters.hpp"
#include "proxy/base/unique_fd.hpp"
#include "proxy/conn/worker.hpp"

namespace ztp::testing {

inline UniqueFd listen_loopback(uint16_t& port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd.get(), 512), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    return fd;
}

inline UniqueFd connect_loopback(uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fd.reset();
    return fd;
}

inline void set_recv_timeout(int fd, int seconds) {
    timeval tv{seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// A plaintext backend: every accepted connection runs `handler` on its own thread.
class TestBackend {
public:
    explicit TestBackend(std::function<void(int fd)> handler) : handler_(std::move(handler)) {
        fd_ = listen_loopback(port_);
        thread_ = std::thread([this] {
            for (;;) {
                int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
                if (c < 0) return;
                if (stopping_) {
                    ::close(c);
                    return;
                }
                std::lock_guard lock(mu_);
                conns_.emplace_back([this, c] {
                    UniqueFd owned(c);
                    set_recv_timeout(c, 20);
                    handler_(c);
                });
            }
        });
    }
    ~TestBackend() {
        stopping_ = true;
        ::shutdown(fd_.get(), SHUT_RDWR);
        thread_.join();
        std::lock_guard lock(mu_);
        for (auto& t : conns_) t.join();
    }
    uint16_t port() const { return port_; }

private:
    std::function<void(int)> handler_;
    UniqueFd fd_;
    uint16_t port_ = 0;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
    std::mutex mu_;
    std::vector<std::thread> conns_;
};

// Blocking calls in tests can see EINTR (io_uring task-work notifications at ring teardown).
inline ssize_t recv_retrying(int fd, void* buf, size_t len) {
    ssize_t n;
    do n = ::recv(fd, buf, len, 0);
    while (n < 0 && errno == EINTR);
    return n;
}

inline std::string read_until_eof(int fd) {
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = recv_retrying(fd, buf, sizeof buf);
        if (n <= 0) return out;
        out.append(buf, static_cast<size_t>(n));
    }
}

inline bool send_all(int fd, const void* data, size_t len) {
    auto* p = static_cast<const char*>(data);
    while (len > 0) {
        ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        p += n;
        len -= static_cast<size_t>(n);
    }
    return true;
}

// Blocking TLS client; verifies the proxy's certificate against the test CA. `cipher` (an OpenSSL
// name: a TLS 1.3 suite, or a TLS 1.2 cipher with max_version TLS 1.2) offers only that one.
class TlsClient {
public:
    TlsClient(uint16_t port, const std::string& ca_file, const std::string& sni = "localhost", int max_version = 0,
              const std::string& cipher = "") {
        ctx_.reset(SSL_CTX_new(TLS_client_method()));
        if (max_version) SSL_CTX_set_max_proto_version(ctx_.get(), max_version);
        if (!cipher.empty() && max_version == TLS1_2_VERSION) SSL_CTX_set_cipher_list(ctx_.get(), cipher.c_str());
        if (!cipher.empty() && max_version != TLS1_2_VERSION) SSL_CTX_set_ciphersuites(ctx_.get(), cipher.c_str());
        SSL_CTX_load_verify_locations(ctx_.get(), ca_file.c_str(), nullptr);
        SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
        fd_ = connect_loopback(port);
        if (!fd_) return;
        set_recv_timeout(fd_.get(), 20);
        ssl_.reset(SSL_new(ctx_.get()));
        SSL_set_fd(ssl_.get(), fd_.get());
        SSL_set_tlsext_host_name(ssl_.get(), sni.c_str());
        SSL_set1_host(ssl_.get(), sni.c_str());
        int rc;
        while ((rc = SSL_connect(ssl_.get())) != 1 && retryable(rc)) {
        }
        connected_ = rc == 1;
        ERR_clear_error();
    }
    bool connected() const { return connected_; }
    bool write_all(const std::string& s) {
        size_t off = 0;
        while (off < s.size()) {
            size_t n = 0;
            int rc = SSL_write_ex(ssl_.get(), s.data() + off, s.size() - off, &n);
            if (rc != 1 && retryable(rc)) continue;
            if (rc != 1) return false;
            off += n;
        }
        return true;
    }
    // Reads until `want` bytes arrived or the stream ended; `clean_eof` says whether it ended
    // with close_notify.
    std::string read(size_t want, bool* clean_eof = nullptr) {
        std::string out;
        char buf[65536];
        while (out.size() < want) {
            size_t n = 0;
            int rc = SSL_read_ex(ssl_.get(), buf, std::min(sizeof buf, want - out.size()), &n);
            if (rc == 1) {
                out.append(buf, n);
                continue;
            }
            int e = SSL_get_error(ssl_.get(), rc);  // once: it reads the error queue
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {  // EINTR on a blocking socket
                ERR_clear_error();
                continue;
            }
            if (clean_eof) *clean_eof = e == SSL_ERROR_ZERO_RETURN;
            unsigned long err = ERR_peek_error();
            last_error_ = err ? ERR_reason_error_string(err) ? ERR_reason_error_string(err) : "?" : "";
            ERR_clear_error();
            break;
        }
        return out;
    }
    // OpenSSL's reason for the failure that ended the last read, e.g. "sslv3 alert bad record mac".
    const std::string& last_error() const { return last_error_; }
    std::string read_to_end(bool* clean_eof) { return read(SIZE_MAX, clean_eof); }
    void close_notify() { SSL_shutdown(ssl_.get()); }
    int fd() const { return fd_.get(); }
    SSL* ssl() const { return ssl_.get(); }
    std::string cipher() const { return connected_ ? SSL_get_cipher_name(ssl_.get()) : ""; }

private:
    // The socket BIO reports EINTR on a blocking socket as WANT_READ/WANT_WRITE.
    bool retryable(int rc) {
        int e = SSL_get_error(ssl_.get(), rc);
        ERR_clear_error();
        return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
    }

    SslCtxPtr ctx_;
    UniqueFd fd_;
    SslPtr ssl_;
    bool connected_ = false;
    std::string last_error_;
};

// Sends `payload` while reading as many bytes back, in ONE thread with a non-blocking socket: an
// OpenSSL SSL object must never be used by two threads at once. Returns what came back.
inline std::string duplex_exchange(TlsClient& c, const std::string& payload) {
    int fd = c.fd();
    int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    std::string got;
    size_t sent = 0;
    char buf[65536];
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (got.size() < payload.size() && std::chrono::steady_clock::now() < deadline) {
        bool progress = false;
        if (sent < payload.size()) {
            size_t n = 0;
            // On WANT_WRITE the retry repeats exactly these arguments, as OpenSSL requires.
            int rc = SSL_write_ex(c.ssl(), payload.data() + sent, std::min<size_t>(payload.size() - sent, 65536), &n);
            if (rc == 1) {
                sent += n;
                progress = true;
            } else if (int e = SSL_get_error(c.ssl(), rc); e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                break;
            }
            ERR_clear_error();
        }
        size_t n = 0;
        int rc = SSL_read_ex(c.ssl(), buf, sizeof buf, &n);
        if (rc == 1) {
            got.append(buf, n);
            progress = true;
        } else if (int e = SSL_get_error(c.ssl(), rc); e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            break;
        }
        ERR_clear_error();
        if (!progress) {
            pollfd p{fd, static_cast<short>(POLLIN | (sent < payload.size() ? POLLOUT : 0)), 0};
            ::poll(&p, 1, 100);
        }
    }
    ::fcntl(fd, F_SETFL, flags);
    return got;
}

// The proxy under test: one worker serving one listener in front of `backend_port`.
class TestProxy {
public:
    TestProxy(const app::DemoCerts& certs, uint16_t backend_port,
              const std::function<void(config::Policy&)>& tweak = {}) {
        config::Policy p;
        config::Listener l;
        l.name = "test";
        l.address = *SocketAddress::parse("127.0.0.1:0");
        config::Certificate cert;
        cert.name = "c";
        cert.cert_file = certs.server_cert.string();
        cert.key_file = certs.server_key.string();
        l.tls.certificates.push_back(cert);
        p.listeners.push_back(l);
        p.backends.push_back({"b", {*SocketAddress::parse("127.0.0.1:" + std::to_string(backend_port))}, {}});
        config::Route r;
        r.is_default = true;
        r.backend = "b";
        p.routes.push_back(r);
        p.logging.access_log = false;
        if (tweak) tweak(p);
        std::vector<config::Diagnostic> problems;
        auto rt = conn::Runtime::build(p, problems);
        EXPECT_TRUE(rt) << (problems.empty() ? "" : problems[0].str());
        if (!rt) return;
        UniqueFd lfd = listen_loopback(port_);
        std::vector<conn::ListenSocket> socks;
        socks.push_back({0, std::move(lfd), nullptr});
        auto w = conn::Worker::create(0, rt, std::move(socks));
        EXPECT_TRUE(w);
        worker_ = std::move(w).value();
        worker_->start();
    }
    ~TestProxy() { stop(); }
    // Stops and joins the worker: after this, its state can be read from the test's thread.
    void stop() {
        if (worker_ && !stopped_) {
            worker_->request_stop(conn::Clock::now());
            worker_->join();
            stopped_ = true;
        }
    }
    uint16_t port() const { return port_; }
    conn::Worker& worker() { return *worker_; }

private:
    uint16_t port_ = 0;
    std::unique_ptr<conn::Worker> worker_;
    bool stopped_ = false;
};

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/ztp-test-XXXXXX";
        path_ = ::mkdtemp(tmpl);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

}  // namespace ztp::testing
