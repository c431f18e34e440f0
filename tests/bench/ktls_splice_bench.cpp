// ktls_splice_bench: what forwarding one message costs on the kernel record path, splice through a
// pipe (what SpliceRelay does) against recvmsg + send through a user buffer, per message size. The
// answer decides whether small transfers should skip splice (README "Small transfers").
//
//   tests/ktls/run-in-ktls-kernel.sh build/ktls_splice_bench [--reps N] [--max-bytes B]
//
// Needs kTLS (exits 77 without). Per message size (64 B .. 64 KiB), a sender process writes N
// messages, one send() each, into a kTLS TX socket (TLS 1.3 AES-128-GCM, fixed key); the
// forwarder (this process) has the peer as a kTLS RX socket and moves every message to a plain
// TCP socket whose peer, a sink thread of the sender process, reads and discards. Four ways:
//   splice        splice(kTLS → pipe) + splice(pipe → TCP), blocking system calls
//   recv          recvmsg(kTLS, cmsg) + send(TCP) through a buffer of the message size
//   uring-splice  io_uring as ztproxy did before splice_now: POLL_ADD linked to SPLICE, then SPLICE out
//   uring-recv    io_uring: POLL_ADD linked to RECVMSG (cmsg), then SEND
// Measured: the forwarder process's CPU time (CLOCK_PROCESS_CPUTIME_ID: its thread plus io_uring's
// io-wq workers, which run io_uring's splices) per message, and wall time per message. The sender
// and sink are another process, so their CPU is not counted. Each (size, way) runs --reps times,
// interleaved; the median is printed. Not a test: it prints numbers and asserts nothing.
#include <fcntl.h>
#include <liburing.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "crypto/ktls_sockopt.hpp"
#include "proxy/base/unique_fd.hpp"

namespace {

using namespace ztp;

constexpr int kSkip = 77;
constexpr size_t kSizes[] = {64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536};
const char* const kWays[] = {"splice", "recv", "uring-splice", "uring-recv"};
constexpr size_t kPipeSize = 64 * 1024;

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "ktls_splice_bench: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

struct Pair {
    UniqueFd a, b;
};

Pair tcp_pair() {
    UniqueFd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (!l || ::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l.get(), 1) != 0 ||
        ::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &al) != 0)
        die("loopback listener");
    Pair p;
    p.a.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!p.a || ::connect(p.a.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect");
    p.b.reset(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!p.b) die("accept");
    int one = 1;
    for (int fd : {p.a.get(), p.b.get()}) ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return p;
}

// The same fixed key on both ends: the bench measures record handling, not key exchange.
void install(int fd, crypto::Direction dir) {
    std::array<uint8_t, 16> key{};
    std::array<uint8_t, 12> iv{};
    for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(0x30 + i);
    for (size_t i = 0; i < iv.size(); ++i) iv[i] = static_cast<uint8_t>(0x70 + i);
    if (auto r = crypto::ktls_enable_ulp(fd); !r) {
        std::fprintf(stderr, "ktls_splice_bench: no kTLS here (%s): run it inside "
                             "tests/ktls/run-in-ktls-kernel.sh\n", r.error().message().c_str());
        std::exit(kSkip);
    }
    if (auto r = crypto::ktls_install(fd, dir, config::TlsVersion::tls1_3, config::Cipher::aes_128_gcm, key, iv, 0);
        !r) {
        std::fprintf(stderr, "ktls_splice_bench: ktls_install: %s\n", r.error().message().c_str());
        std::exit(1);
    }
}

// All threads of this process, exited ones included (io-wq workers come and go), in ns: getrusage
// is tick-sampled (10 ms steps under UML), far too coarse for a message.
double cpu_seconds() {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

void write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("send");
        }
        p += w;
        n -= static_cast<size_t>(w);
    }
}

// --------------------------------------------------------------------------- the forwarder ways

ssize_t ktls_recvmsg(int fd, char* buf, size_t len) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(unsigned char))];
    iovec iov{buf, len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    return ::recvmsg(fd, &msg, 0);
}

void forward_splice(int in, int out, int pipe_r, int pipe_w, size_t size, size_t total) {
    size_t moved = 0;
    while (moved < total) {
        ssize_t n = ::splice(in, nullptr, pipe_w, nullptr, std::min(size, total - moved), SPLICE_F_MOVE);
        if (n <= 0) die("splice in");
        for (ssize_t left = n; left > 0;) {
            ssize_t m = ::splice(pipe_r, nullptr, out, nullptr, static_cast<size_t>(left), SPLICE_F_MOVE);
            if (m <= 0) die("splice out");
            left -= m;
        }
        moved += static_cast<size_t>(n);
    }
}

void forward_recv(int in, int out, size_t size, size_t total) {
    std::vector<char> buf(size);
    size_t moved = 0;
    while (moved < total) {
        ssize_t n = ktls_recvmsg(in, buf.data(), std::min(size, total - moved));
        if (n <= 0) die("recvmsg");
        write_all(out, buf.data(), static_cast<size_t>(n));
        moved += static_cast<size_t>(n);
    }
}

int submit_and_wait(io_uring& ring) {
    if (io_uring_submit(&ring) < 0) die("io_uring_submit");
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe(&ring, &cqe);
    if (rc < 0) {
        errno = -rc;
        die("io_uring_wait_cqe");
    }
    int res = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    return res;
}

// As SpliceRelay did before it spliced from the event loop (poll linked to an io_uring SPLICE, then
// SPLICE out): the poll posts no CQE on success.
void forward_uring_splice(io_uring& ring, int in, int out, int pipe_r, int pipe_w, size_t size, size_t total) {
    constexpr unsigned kFlags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
    size_t moved = 0;
    while (moved < total) {
        io_uring_sqe* p = io_uring_get_sqe(&ring);
        io_uring_prep_poll_add(p, in, POLLIN);
        p->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
        io_uring_sqe* s = io_uring_get_sqe(&ring);
        io_uring_prep_splice(s, in, -1, pipe_w, -1, static_cast<unsigned>(std::min(size, total - moved)), kFlags);
        int n = submit_and_wait(ring);
        if (n == -EAGAIN) continue;
        if (n <= 0) {
            errno = -n;
            die("io_uring splice in");
        }
        for (int left = n; left > 0;) {
            io_uring_sqe* o = io_uring_get_sqe(&ring);
            io_uring_prep_splice(o, pipe_r, -1, out, -1, static_cast<unsigned>(left), kFlags);
            int m = submit_and_wait(ring);
            if (m == -EAGAIN) {
                pollfd pf{out, POLLOUT, 0};
                ::poll(&pf, 1, -1);
                continue;
            }
            if (m <= 0) {
                errno = -m;
                die("io_uring splice out");
            }
            left -= m;
        }
        moved += static_cast<size_t>(n);
    }
}

void forward_uring_recv(io_uring& ring, int in, int out, size_t size, size_t total) {
    std::vector<char> buf(size);
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(unsigned char))];
    size_t moved = 0;
    while (moved < total) {
        iovec iov{buf.data(), std::min(size, total - moved)};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        io_uring_sqe* p = io_uring_get_sqe(&ring);
        io_uring_prep_poll_add(p, in, POLLIN);
        p->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
        io_uring_sqe* r = io_uring_get_sqe(&ring);
        io_uring_prep_recvmsg(r, in, &msg, MSG_DONTWAIT);
        int n = submit_and_wait(ring);
        if (n == -EAGAIN) continue;
        if (n <= 0) {
            errno = -n;
            die("io_uring recvmsg");
        }
        for (int off = 0; off < n;) {
            io_uring_sqe* s = io_uring_get_sqe(&ring);
            io_uring_prep_send(s, out, buf.data() + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
            int m = submit_and_wait(ring);
            if (m <= 0) {
                errno = -m;
                die("io_uring send");
            }
            off += m;
        }
        moved += static_cast<size_t>(n);
    }
}

// --------------------------------------------------------------------------------- one run

struct Sample {
    double cpu_us = 0;   // forwarder CPU per message
    double wall_us = 0;  // wall time per message
};

Sample run(const char* way, size_t size, size_t count, io_uring& ring) {
    Pair tls = tcp_pair();   // a: sender (kTLS TX), b: forwarder in (kTLS RX)
    Pair sink = tcp_pair();  // a: forwarder out (plain), b: sink
    install(tls.a.get(), crypto::Direction::tx);
    install(tls.b.get(), crypto::Direction::rx);
    const size_t total = size * count;

    pid_t child = ::fork();
    if (child < 0) die("fork");
    if (child == 0) {
        // Sender and sink: their CPU is theirs, not the forwarder's.
        tls.b.reset();
        sink.a.reset();
        std::thread drain([&] {
            std::vector<char> b(256 * 1024);
            while (::read(sink.b.get(), b.data(), b.size()) > 0) {
            }
        });
        std::vector<char> msg(size, 'm');
        for (size_t i = 0; i < count; ++i) write_all(tls.a.get(), msg.data(), msg.size());
        drain.join();
        std::_Exit(0);
    }
    tls.a.reset();
    sink.b.reset();

    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) die("pipe2");
    UniqueFd pipe_r(fds[0]), pipe_w(fds[1]);
    ::fcntl(pipe_w.get(), F_SETPIPE_SZ, static_cast<int>(kPipeSize));
    const bool uring = std::strncmp(way, "uring", 5) == 0;
    if (uring) {  // non-blocking ends, as PipePool hands them out
        for (int fd : {pipe_r.get(), pipe_w.get(), tls.b.get(), sink.a.get()})
            ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    }

    const double cpu0 = cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    if (std::strcmp(way, "splice") == 0)
        forward_splice(tls.b.get(), sink.a.get(), pipe_r.get(), pipe_w.get(), size, total);
    else if (std::strcmp(way, "recv") == 0)
        forward_recv(tls.b.get(), sink.a.get(), size, total);
    else if (std::strcmp(way, "uring-splice") == 0)
        forward_uring_splice(ring, tls.b.get(), sink.a.get(), pipe_r.get(), pipe_w.get(), size, total);
    else
        forward_uring_recv(ring, tls.b.get(), sink.a.get(), size, total);
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cpu = cpu_seconds() - cpu0;

    sink.a.reset();  // EOF for the sink
    int status = 0;
    ::waitpid(child, &status, 0);
    return {cpu * 1e6 / static_cast<double>(count), wall * 1e6 / static_cast<double>(count)};
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    int reps = 5;
    size_t max_bytes = 32u << 20;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
        else if (a == "--max-bytes" && i + 1 < argc) max_bytes = std::strtoull(argv[++i], nullptr, 10);
        else {
            std::fprintf(stderr, "usage: %s [--reps N] [--max-bytes B]\n", argv[0]);
            return 2;
        }
    }
    io_uring ring;
    if (int rc = io_uring_queue_init(8, &ring, 0); rc < 0) {
        errno = -rc;
        die("io_uring_queue_init");
    }
    std::printf("# forwarder CPU (all threads, io-wq included) and wall time per message, median of %d runs\n",
                reps);
    std::printf("# %-6s %6s", "size", "msgs");
    for (const char* w : kWays) std::printf(" %14s", w);
    std::printf("   (CPU us/msg; wall us/msg in brackets)\n");
    for (size_t size : kSizes) {
        const size_t count = std::clamp<size_t>(max_bytes / size, 256, 20000);
        std::vector<std::vector<double>> cpu(std::size(kWays)), wall(std::size(kWays));
        for (int r = 0; r < reps; ++r)
            for (size_t w = 0; w < std::size(kWays); ++w) {  // interleaved: drift hits every way alike
                Sample s = run(kWays[w], size, count, ring);
                cpu[w].push_back(s.cpu_us);
                wall[w].push_back(s.wall_us);
            }
        std::printf("  %-6zu %6zu", size, count);
        for (size_t w = 0; w < std::size(kWays); ++w)
            std::printf(" %6.1f [%5.0f]", median(cpu[w]), median(wall[w]));
        // The spread of the CPU samples: under UML a host that is busy elsewhere shows up here.
        std::printf("   range");
        for (size_t w = 0; w < std::size(kWays); ++w)
            std::printf(" %.0f-%.0f", *std::min_element(cpu[w].begin(), cpu[w].end()),
                        *std::max_element(cpu[w].begin(), cpu[w].end()));
        std::printf("\n");
        std::fflush(stdout);
    }
    io_uring_queue_exit(&ring);
    return 0;
}
