// EventLoop: one io_uring per worker thread. Every submitted operation carries a pointer to an
// Op embedded in its owner; the owner must stay alive until that op's completion arrived (owners
// count their in-flight ops and are freed only at zero). Ops submitted with a null Op (cancels,
// link timeouts) complete silently.
//
// The ring accepts only the operations below (their opcodes are kUringOps in uring_ops.hpp;
// IORING_REGISTER_RESTRICTIONS, where the kernel has it): io_uring requests run in the kernel out
// of seccomp's sight, so a ring that could open files or create sockets would be a way around
// ztproxy's system-call filter.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <memory>

#include "proxy/base/result.hpp"
#include "proxy/io/submitter.hpp"

namespace ztp::io {

class CompletionHandler {
public:
    virtual void on_completion(uint8_t tag, int res, uint32_t flags) = 0;

protected:
    ~CompletionHandler() = default;
};

struct Op {
    CompletionHandler* handler = nullptr;
    uint8_t tag = 0;
};

class EventLoop final : public Submitter {
public:
    static Result<std::unique_ptr<EventLoop>> create(unsigned entries);
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    void poll(Op* op, int fd, unsigned events) override;
    void recv(Op* op, int fd, void* buf, size_t len) override;
    void send(Op* op, int fd, const void* buf, size_t len) override;
    void read(Op* op, int fd, void* buf, size_t len);
    // Scatter/gather: `msg` (and the iovecs it points at) must stay valid until completion.
    void sendmsg(Op* op, int fd, const msghdr* msg) override;
    void recvmsg(Op* op, int fd, msghdr* msg) override;
    long recv_now(int fd, void* buf, size_t len) override;
    // connect with a deadline: the kernel cancels it (-ECANCELED) when `timeout_ms` passes.
    void connect(Op* op, int fd, const sockaddr* addr, socklen_t len, __kernel_timespec* timeout);
    void multishot_accept(Op* op, int listen_fd);
    long splice_now(int in, int out, size_t len) override;
    void timeout(Op* op, __kernel_timespec* ts) override;
    // Cancels every op still pending on `fd`; their owners get -ECANCELED completions.
    void cancel_fd(int fd) override;

    // Submits pending SQEs, waits for at least one completion and dispatches all that are ready.
    Result<void> run_once();

    // Whether the ring is limited to this class's opcodes (false on kernels before 5.10).
    bool restricted() const { return restricted_; }

private:
    EventLoop() = default;
    io_uring_sqe* sqe();
    io_uring ring_{};
    bool initialised_ = false;
    bool restricted_ = false;
};

}  // namespace ztp::io
