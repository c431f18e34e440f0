// Submitter: the io_uring operations a relay may submit, as an interface. EventLoop implements it
// on a real ring; the relay-core tests implement it with a fake completion queue that completes
// operations in any order the kernel could (tests/unit/fake_ring.hpp). Every operation completes
// exactly once through its Op (the kernel contract the relays rely on); the memory it names stays
// the operation's until then.
#pragma once

#include <linux/time_types.h>
#include <sys/socket.h>

#include <cstddef>

namespace ztp::io {

struct Op;

class Submitter {
public:
    virtual void poll(Op* op, int fd, unsigned events) = 0;
    virtual void recv(Op* op, int fd, void* buf, size_t len) = 0;
    virtual void send(Op* op, int fd, const void* buf, size_t len) = 0;
    // Scatter/gather: `msg` (and the iovecs it points at) must stay valid until completion.
    virtual void sendmsg(Op* op, int fd, const msghdr* msg) = 0;
    virtual void recvmsg(Op* op, int fd, msghdr* msg) = 0;
    // Not an io_uring operation: a non-blocking recv(2) in this loop turn, for a socket whose
    // readiness just completed (no second submission and loop turn to fetch the bytes). The byte
    // count, 0 at the peer's FIN, or -errno (-EAGAIN: nothing there after all).
    virtual long recv_now(int fd, void* buf, size_t len) = 0;
    // Not an io_uring operation either: a non-blocking splice(2) of up to `len` bytes from `in` to
    // `out` (one of them a pipe) in this loop turn. The byte count, 0 at the source's end, or
    // -errno (-EAGAIN: the source is empty or the destination full). io_uring's SPLICE would run in
    // an io-wq worker thread, a handoff per message.
    virtual long splice_now(int in, int out, size_t len) = 0;
    virtual void timeout(Op* op, __kernel_timespec* ts) = 0;
    // Cancels every op still pending on `fd`; their owners get -ECANCELED completions.
    virtual void cancel_fd(int fd) = 0;

protected:
    ~Submitter() = default;
};

}  // namespace ztp::io
