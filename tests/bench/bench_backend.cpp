// bench_backend: a fast plaintext TCP backend for the proxy benchmarks (tests/bench/run_bench.py).
//
//   bench_backend [--listen 127.0.0.1:0] [--max-seconds S] MODE [ARG]
//
// Modes (one epoll thread, level-triggered, non-blocking sockets, 256 KiB I/O):
//   sink [ACK_AFTER]   read and discard; with ACK_AFTER > 0, send one byte 'K' on a connection once
//                      it has received ACK_AFTER bytes (lets an uploading client time the transfer)
//   source N           send N bytes on every accepted connection, then shut down the write side
//   http               HTTP/1.1 keep-alive responder: every request (headers only, pipelining ok)
//                      gets a 200 with a 1 KiB body (for wrk)
//   echo               send back what arrives
//   file PATH          send the file's bytes on every accepted connection, then shut down the write
//                      side (like `source`, with given content: redaction benchmarks)
//   httpfile PATH      HTTP/1.x: on each connection, once a request's headers arrived, answer 200
//                      with the file as body (Content-Length, Connection: close), then shut down the
//                      write side (for an HTTP proxy in front, e.g. nginx sub_filter)
// Options (before MODE):
//   --sha256           sink: hash what the FIRST connection receives (a verification run; later
//                      ones are timed and not hashed) and print "conn BYTES SHA256HEX" on stdout
//                      when it acks (ACK_AFTER) or closes
//
// Prints "port N" on stdout once listening (port 0 = the kernel picks a free one), then runs until
// SIGTERM/SIGINT (or --max-seconds, a safety bound) and prints one stats line on stderr.
// Not a test: a load tool.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

enum class Mode { sink, source, http, echo, file, httpfile };

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

constexpr size_t kIo = 256 * 1024;
constexpr size_t kBody = 1024;

struct Conn {
    int fd = -1;
    uint64_t received = 0;
    uint64_t to_send = 0;   // source/file modes: bytes still to send
    uint64_t file_off = 0;  // file modes: next byte of the file to send
    bool requested = false; // httpfile: the request's headers arrived
    bool hashed = false;    // --sha256: the line was printed
    std::shared_ptr<EVP_MD_CTX> sha;  // --sha256 (sink)
    bool acked = false;
    bool read_eof = false;
    bool wr_shut = false;
    std::string in;         // http: partial request bytes
    std::string out;        // pending output (http, echo)
    size_t out_off = 0;
};

struct Stats {
    uint64_t accepted = 0, bytes_in = 0, bytes_out = 0, requests = 0;
};

void raise_nofile() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (want.rlim_max < 200000) {  // root may raise the hard limit
        rlimit big{200000, 200000};
        if (setrlimit(RLIMIT_NOFILE, &big) == 0) return;
    }
    setrlimit(RLIMIT_NOFILE, &want);
}

bool parse_addr(const std::string& s, sockaddr_in& a) {
    auto colon = s.rfind(':');
    if (colon == std::string::npos) return false;
    std::memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(std::atoi(s.c_str() + colon + 1)));
    return inet_pton(AF_INET, s.substr(0, colon).c_str(), &a.sin_addr) == 1;
}

[[noreturn]] void usage() {
    std::fprintf(stderr,
                 "usage: bench_backend [--listen IP:PORT] [--max-seconds S] [--sha256] sink [ACK_AFTER] | source N | "
                 "http | echo | file PATH | httpfile PATH\n");
    std::exit(2);
}

class Server {
public:
    Server(Mode mode, uint64_t arg, std::string file, bool sha256)
        : mode_(mode), arg_(arg), buf_(kIo), file_(std::move(file)), sha256_(sha256) {
        // Source data: a repeating pattern, so a checker could verify it if it wanted to.
        for (size_t i = 0; i < buf_.size(); ++i) buf_[i] = static_cast<char>('a' + i % 26);
        response_ = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
                    std::to_string(kBody) + "\r\n\r\n" + std::string(kBody, 'x');
        file_header_ = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                       std::to_string(file_.size()) + "\r\nConnection: close\r\n\r\n";
    }

    int run(int lfd, double max_seconds) {
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = lfd;
        epoll_ctl(ep_, EPOLL_CTL_ADD, lfd, &ev);
        auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(max_seconds);
        std::vector<epoll_event> events(512);
        while (!g_stop && std::chrono::steady_clock::now() < deadline) {
            int n = epoll_wait(ep_, events.data(), static_cast<int>(events.size()), 200);
            if (n < 0) {
                if (errno == EINTR) continue;
                std::perror("epoll_wait");
                return 1;
            }
            for (int i = 0; i < n; ++i) {
                int fd = events[i].data.fd;
                if (fd == lfd) {
                    accept_all(lfd);
                    continue;
                }
                auto it = conns_.find(fd);
                if (it == conns_.end()) continue;
                handle(it->second, events[i].events);
            }
        }
        std::fprintf(stderr, "bench_backend: accepted=%llu bytes_in=%llu bytes_out=%llu requests=%llu open=%zu\n",
                     (unsigned long long)st_.accepted, (unsigned long long)st_.bytes_in,
                     (unsigned long long)st_.bytes_out, (unsigned long long)st_.requests, conns_.size());
        return 0;
    }

private:
    void accept_all(int lfd) {
        for (;;) {
            int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;  // EAGAIN (or EMFILE: retried on the next wakeup)
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            ++st_.accepted;
            Conn c;
            c.fd = fd;
            if (mode_ == Mode::source) c.to_send = arg_;
            if (mode_ == Mode::file) c.to_send = file_.size();
            if (mode_ == Mode::sink && sha256_ && st_.accepted == 1) {
                c.sha.reset(EVP_MD_CTX_new(), EVP_MD_CTX_free);
                EVP_DigestInit_ex(c.sha.get(), EVP_sha256(), nullptr);
            }
            auto& ref = conns_[fd] = std::move(c);
            epoll_event ev{};
            ev.events = EPOLLIN | (mode_ == Mode::source || mode_ == Mode::file ? EPOLLOUT : 0u);
            ev.data.fd = fd;
            epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
            (void)ref;
        }
    }

    void print_hash(Conn& c) {
        if (!c.sha || c.hashed) return;
        c.hashed = true;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        EVP_DigestFinal_ex(c.sha.get(), md, &len);
        std::string hex;
        static const char* digits = "0123456789abcdef";
        for (unsigned i = 0; i < len; ++i) {
            hex += digits[md[i] >> 4];
            hex += digits[md[i] & 15];
        }
        std::printf("conn %llu %s\n", (unsigned long long)c.received, hex.c_str());
        std::fflush(stdout);
    }

    void close_conn(Conn& c) {
        print_hash(c);
        int fd = c.fd;
        epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
        conns_.erase(fd);
    }

    void set_events(Conn& c, bool want_in, bool want_out) {
        epoll_event ev{};
        ev.events = (want_in ? EPOLLIN : 0u) | (want_out ? EPOLLOUT : 0u);
        ev.data.fd = c.fd;
        epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    }

    // Writes pending output; returns false when the connection died.
    bool flush_out(Conn& c) {
        while (c.out_off < c.out.size()) {
            ssize_t w = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
                if (errno == EINTR) continue;
                return false;
            }
            c.out_off += static_cast<size_t>(w);
            st_.bytes_out += static_cast<uint64_t>(w);
        }
        c.out.clear();
        c.out_off = 0;
        return true;
    }

    void handle(Conn& c, uint32_t evs) {
        if (mode_ == Mode::source && (evs & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && c.to_send > 0) {
            while (c.to_send > 0) {
                size_t chunk = c.to_send < buf_.size() ? static_cast<size_t>(c.to_send) : buf_.size();
                ssize_t w = ::send(c.fd, buf_.data(), chunk, MSG_NOSIGNAL);
                if (w < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    if (errno == EINTR) continue;
                    close_conn(c);
                    return;
                }
                c.to_send -= static_cast<uint64_t>(w);
                st_.bytes_out += static_cast<uint64_t>(w);
            }
            if (c.to_send == 0 && !c.wr_shut) {
                ::shutdown(c.fd, SHUT_WR);
                c.wr_shut = true;
                set_events(c, true, false);
            }
        }
        if ((mode_ == Mode::file || mode_ == Mode::httpfile) && (evs & (EPOLLOUT | EPOLLERR | EPOLLHUP)) &&
            c.to_send > 0) {
            if (!send_file(c)) return;
        }
        if (evs & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            if (!read_some(c)) return;  // closed
        }
        if ((mode_ == Mode::http || mode_ == Mode::echo) && (evs & EPOLLOUT)) {
            if (!flush_out(c)) {
                close_conn(c);
                return;
            }
            if (c.out.empty()) {
                if (c.read_eof) {
                    close_conn(c);
                    return;
                }
                set_events(c, true, false);
            }
        }
    }

    // file/httpfile: the (header and) file bytes still to send, then SHUT_WR. Returns false when
    // the connection was closed.
    bool send_file(Conn& c) {
        if (!flush_out(c)) {  // httpfile: the header first
            close_conn(c);
            return false;
        }
        if (!c.out.empty()) return true;
        while (c.to_send > 0) {
            size_t chunk = c.to_send < kIo ? static_cast<size_t>(c.to_send) : kIo;
            ssize_t w = ::send(c.fd, file_.data() + c.file_off, chunk, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
                if (errno == EINTR) continue;
                close_conn(c);
                return false;
            }
            c.to_send -= static_cast<uint64_t>(w);
            c.file_off += static_cast<uint64_t>(w);
            st_.bytes_out += static_cast<uint64_t>(w);
        }
        if (!c.wr_shut) {
            ::shutdown(c.fd, SHUT_WR);
            c.wr_shut = true;
            if (c.read_eof) {
                close_conn(c);
                return false;
            }
            set_events(c, true, false);
        }
        return true;
    }

    // Returns false when the connection was closed.
    bool read_some(Conn& c) {
        // echo/http: stop reading while output is pending (back-pressure).
        for (int rounds = 0; rounds < 16; ++rounds) {
            if ((mode_ == Mode::echo || mode_ == Mode::http) && !c.out.empty()) {
                set_events(c, false, true);
                return true;
            }
            ssize_t r = ::recv(c.fd, buf_in_, sizeof buf_in_, 0);
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
                if (errno == EINTR) continue;
                close_conn(c);
                return false;
            }
            if (r == 0) {
                c.read_eof = true;
                if (((mode_ == Mode::source || mode_ == Mode::file || mode_ == Mode::httpfile) && c.to_send > 0) ||
                    !c.out.empty()) {
                    set_events(c, false, true);  // finish sending first
                    return true;
                }
                close_conn(c);
                return false;
            }
            st_.bytes_in += static_cast<uint64_t>(r);
            c.received += static_cast<uint64_t>(r);
            switch (mode_) {
                case Mode::sink:
                    if (c.sha) EVP_DigestUpdate(c.sha.get(), buf_in_, static_cast<size_t>(r));
                    if (arg_ > 0 && !c.acked && c.received >= arg_) {
                        c.acked = true;
                        print_hash(c);  // before the ack: the client's caller reads it next
                        ::send(c.fd, "K", 1, MSG_NOSIGNAL);
                    }
                    break;
                case Mode::source:
                case Mode::file:
                    break;
                case Mode::httpfile:
                    if (!c.requested) {
                        c.in.append(buf_in_, static_cast<size_t>(r));
                        if (c.in.find("\r\n\r\n") != std::string::npos) {
                            c.requested = true;
                            c.in.clear();
                            c.out = file_header_;
                            c.out_off = 0;
                            c.to_send = file_.size();
                            c.file_off = 0;
                            set_events(c, true, true);
                        } else if (c.in.size() > 64 * 1024) {
                            close_conn(c);
                            return false;
                        }
                    }
                    break;
                case Mode::echo:
                    c.out.append(buf_in_, static_cast<size_t>(r));
                    if (!flush_out(c)) {
                        close_conn(c);
                        return false;
                    }
                    break;
                case Mode::http: {
                    c.in.append(buf_in_, static_cast<size_t>(r));
                    size_t pos = 0;
                    for (;;) {
                        size_t end = c.in.find("\r\n\r\n", pos);
                        if (end == std::string::npos) break;
                        c.out += response_;
                        ++st_.requests;
                        pos = end + 4;
                    }
                    c.in.erase(0, pos);
                    if (c.in.size() > 64 * 1024) {  // not HTTP we understand
                        close_conn(c);
                        return false;
                    }
                    if (!flush_out(c)) {
                        close_conn(c);
                        return false;
                    }
                    break;
                }
            }
            if (static_cast<size_t>(r) < sizeof buf_in_) return true;
        }
        return true;
    }

    Mode mode_;
    uint64_t arg_;
    int ep_ = -1;
    std::vector<char> buf_;
    std::string response_;
    std::string file_;         // file modes: the content
    std::string file_header_;  // httpfile: the response header
    bool sha256_ = false;
    char buf_in_[kIo];
    std::unordered_map<int, Conn> conns_;
    Stats st_;
};

}  // namespace

int main(int argc, char** argv) {
    std::string listen = "127.0.0.1:0";
    double max_seconds = 3600;
    bool sha256 = false;
    std::string file;
    int i = 1;
    for (; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--listen" && i + 1 < argc) listen = argv[++i];
        else if (a == "--max-seconds" && i + 1 < argc) max_seconds = std::atof(argv[++i]);
        else if (a == "--sha256") sha256 = true;
        else break;
    }
    if (i >= argc) usage();
    std::string m = argv[i++];
    Mode mode;
    uint64_t arg = 0;
    if (m == "sink") {
        mode = Mode::sink;
        if (i < argc) arg = std::strtoull(argv[i++], nullptr, 10);
    } else if (m == "source") {
        mode = Mode::source;
        if (i >= argc) usage();
        arg = std::strtoull(argv[i++], nullptr, 10);
    } else if (m == "http") {
        mode = Mode::http;
    } else if (m == "echo") {
        mode = Mode::echo;
    } else if (m == "file" || m == "httpfile") {
        mode = m == "file" ? Mode::file : Mode::httpfile;
        if (i >= argc) usage();
        FILE* f = std::fopen(argv[i], "rb");
        if (!f) {
            std::perror(argv[i]);
            return 1;
        }
        char tmp[1 << 16];
        size_t n;
        while ((n = std::fread(tmp, 1, sizeof tmp, f)) > 0) file.append(tmp, n);
        std::fclose(f);
        ++i;
    } else {
        usage();
    }

    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);

    sockaddr_in addr{};
    if (!parse_addr(listen, addr)) usage();
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(lfd, 4096) != 0) {
        std::perror("bind/listen");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
    std::printf("port %u\n", ntohs(addr.sin_port));
    std::fflush(stdout);

    auto* server = new Server(mode, arg, std::move(file), sha256);  // large: keep it off the stack
    int rc = server->run(lfd, max_seconds);
    ::close(lfd);
    return rc;
}
