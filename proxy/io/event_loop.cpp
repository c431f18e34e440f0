#include "proxy/io/event_loop.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <iterator>

#include "proxy/io/uring_ops.hpp"

namespace ztp::io {

namespace {

// The SQE flags the methods below set (their opcodes are kUringOps): the kernel completes anything
// else with -EACCES.
constexpr uint8_t kSqeFlags = IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;

// The raw io_uring_register(2): Debian's liburing 2.3 declares io_uring_register_restrictions and
// io_uring_enable_rings but its shared library does not export them.
int register_op(io_uring* ring, unsigned opcode, const void* arg, unsigned nr) {
    long rc = ::syscall(__NR_io_uring_register, ring->ring_fd, opcode, arg, nr);
    return rc < 0 ? -errno : static_cast<int>(rc);
}

// Restrictions can only be registered while the ring is disabled (IORING_SETUP_R_DISABLED), and
// once it is enabled they cannot be changed or lifted; no register opcode is allowed afterwards.
int restrict_and_enable(io_uring* ring) {
    io_uring_restriction res[std::size(kUringOps) + 1]{};
    for (size_t i = 0; i < std::size(kUringOps); ++i) {
        res[i].opcode = IORING_RESTRICTION_SQE_OP;
        res[i].sqe_op = kUringOps[i].opcode;
    }
    res[std::size(kUringOps)].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
    res[std::size(kUringOps)].sqe_flags = kSqeFlags;
    int rc = register_op(ring, IORING_REGISTER_RESTRICTIONS, res, static_cast<unsigned>(std::size(res)));
    return rc < 0 ? rc : register_op(ring, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
}

}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::create(unsigned entries) {
    std::unique_ptr<EventLoop> loop(new EventLoop());
    // One thread submits and reaps: let the kernel skip cross-thread wake-ups (COOP_TASKRUN),
    // and keep going past a bad SQE instead of dropping the rest of the batch (SUBMIT_ALL).
    // Flags unknown to an older kernel are dropped one step at a time (R_DISABLED: 5.10).
    int rc = -EINVAL;
    for (unsigned flags : {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_R_DISABLED,
                           unsigned{IORING_SETUP_R_DISABLED}, 0u}) {
        io_uring_params p{};
        p.flags = flags;
        rc = io_uring_queue_init_params(entries, &loop->ring_, &p);
        if (rc != -EINVAL) {
            loop->restricted_ = flags & IORING_SETUP_R_DISABLED;
            break;
        }
    }
    if (rc < 0) return make_error(rc, "io_uring_queue_init");
    loop->initialised_ = true;
    if (loop->restricted_) {
        rc = restrict_and_enable(&loop->ring_);
        if (rc < 0) return make_error(rc, "io_uring restrictions");
    }
    return loop;
}

EventLoop::~EventLoop() {
    if (initialised_) io_uring_queue_exit(&ring_);
}

io_uring_sqe* EventLoop::sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    while (!s) {
        // SQ full: hand what we have to the kernel and take a fresh slot.
        io_uring_submit(&ring_);
        s = io_uring_get_sqe(&ring_);
    }
    return s;
}

void EventLoop::poll(Op* op, int fd, unsigned events) {
    auto* s = sqe();
    io_uring_prep_poll_add(s, fd, events);
    io_uring_sqe_set_data(s, op);
}

void EventLoop::recv(Op* op, int fd, void* buf, size_t len) {
    auto* s = sqe();
    io_uring_prep_recv(s, fd, buf, len, 0);
    io_uring_sqe_set_data(s, op);
}

void EventLoop::send(Op* op, int fd, const void* buf, size_t len) {
    auto* s = sqe();
    // MSG_NOSIGNAL: a backend that went away must give EPIPE, not kill the process.
    io_uring_prep_send(s, fd, buf, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data(s, op);
}

void EventLoop::sendmsg(Op* op, int fd, const msghdr* msg) {
    auto* s = sqe();
    io_uring_prep_sendmsg(s, fd, msg, MSG_NOSIGNAL);
    io_uring_sqe_set_data(s, op);
}

void EventLoop::recvmsg(Op* op, int fd, msghdr* msg) {
    auto* s = sqe();
    io_uring_prep_recvmsg(s, fd, msg, 0);
    io_uring_sqe_set_data(s, op);
}

long EventLoop::recv_now(int fd, void* buf, size_t len) {
    // MSG_DONTWAIT: never blocks the loop, whatever the socket's own flags.
    const ssize_t n = ::recv(fd, buf, len, MSG_DONTWAIT);
    return n < 0 ? -errno : n;
}

void EventLoop::read(Op* op, int fd, void* buf, size_t len) {
    auto* s = sqe();
    io_uring_prep_read(s, fd, buf, static_cast<unsigned>(len), 0);
    io_uring_sqe_set_data(s, op);
}

void EventLoop::connect(Op* op, int fd, const sockaddr* addr, socklen_t len, __kernel_timespec* timeout) {
    auto* s = sqe();
    io_uring_prep_connect(s, fd, addr, len);
    io_uring_sqe_set_data(s, op);
    s->flags |= IOSQE_IO_LINK;
    auto* t = sqe();
    io_uring_prep_link_timeout(t, timeout, 0);
    io_uring_sqe_set_data(t, nullptr);
}

void EventLoop::multishot_accept(Op* op, int listen_fd) {
    auto* s = sqe();
    // Accepted sockets come out non-blocking (OpenSSL drives them) and close-on-exec.
    io_uring_prep_multishot_accept(s, listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data(s, op);
}

long EventLoop::splice_now(int in, int out, size_t len) {
    // SPLICE_F_NONBLOCK: a full or empty pipe gives EAGAIN instead of blocking the loop (the socket
    // end must be O_NONBLOCK as well: SpliceRelay::start). SPLICE_F_MOVE: move pages where able.
    for (;;) {
        const ssize_t n = ::splice(in, nullptr, out, nullptr, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n >= 0) return n;
        if (errno != EINTR) return -errno;
    }
}

void EventLoop::timeout(Op* op, __kernel_timespec* ts) {
    auto* s = sqe();
    io_uring_prep_timeout(s, ts, 0, 0);
    io_uring_sqe_set_data(s, op);
}

void EventLoop::cancel_fd(int fd) {
    auto* s = sqe();
    io_uring_prep_cancel_fd(s, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data(s, nullptr);
}

Result<void> EventLoop::run_once() {
    int rc = io_uring_submit_and_wait(&ring_, 1);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) return make_error(rc, "io_uring_submit_and_wait");
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        auto* op = static_cast<Op*>(io_uring_cqe_get_data(cqe));
        if (op && op->handler) op->handler->on_completion(op->tag, cqe->res, cqe->flags);
    }
    io_uring_cq_advance(&ring_, seen);
    return {};
}

}  // namespace ztp::io
