#include "proxy/io/uring_probe.hpp"

#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "proxy/base/unique_fd.hpp"
#include "proxy/io/uring_ops.hpp"

namespace ztp::io {

namespace {

struct Ring {
    io_uring ring{};
    bool live = false;
    ~Ring() {
        if (live) io_uring_queue_exit(&ring);
    }
};

struct ProbeFree {
    void operator()(io_uring_probe* p) const { io_uring_free_probe(p); }
};

std::string init_failure(int err) {
    std::string s = "io_uring_queue_init: ";
    s += std::strerror(err);
    if (err == EPERM)
        s += " (io_uring is blocked: sysctl kernel.io_uring_disabled, or a seccomp profile such as "
             "Docker's default)";
    else if (err == ENOSYS)
        s += " (kernel built without CONFIG_IO_URING)";
    else if (err == ENOMEM)
        s += " (RLIMIT_MEMLOCK too low for the ring on this kernel)";
    return s;
}

// Multishot accept (Linux 5.19): one SQE keeps accepting; every CQE carries IORING_CQE_F_MORE
// while the request stays armed. Older kernels fail the SQE with EINVAL.
bool try_multishot_accept(io_uring& ring) {
    UniqueFd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!l) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l.get(), 4) != 0 ||
        ::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &al) != 0)
        return false;

    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr) return false;
    io_uring_prep_multishot_accept(sqe, l.get(), nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, 1);
    if (io_uring_submit(&ring) != 1) return false;

    UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!c || ::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return false;

    __kernel_timespec ts{2, 0};
    io_uring_cqe* cqe = nullptr;
    if (io_uring_wait_cqe_timeout(&ring, &cqe, &ts) != 0) return false;
    const bool ok = cqe->res >= 0 && (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (cqe->res >= 0) ::close(cqe->res);
    io_uring_cqe_seen(&ring, cqe);
    // The still-armed accept is cancelled when the ring is torn down (io_uring_queue_exit).
    return ok;
}

// Provided-buffer rings (Linux 5.19): the kernel picks receive buffers from a shared ring.
bool try_buf_ring(io_uring& ring) {
    constexpr unsigned kEntries = 8;  // must be a power of two
    const size_t size = kEntries * sizeof(io_uring_buf);
    // The ring memory must be page-aligned: the kernel pins it for the ring's lifetime.
    void* mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return false;
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uintptr_t>(mem);
    reg.ring_entries = kEntries;
    reg.bgid = 0;
    const bool ok = io_uring_register_buf_ring(&ring, &reg, 0) == 0;
    if (ok) (void)io_uring_unregister_buf_ring(&ring, 0);
    ::munmap(mem, size);
    return ok;
}

}  // namespace

UringProbe probe_uring() {
    UringProbe p;
    for (const UringOp& op : kUringOps) p.ops.emplace_back(op.name, false);

    Ring r;
    const int rc = io_uring_queue_init(8, &r.ring, 0);
    if (rc < 0) {
        p.why_not = init_failure(-rc);
        return p;
    }
    r.live = true;
    p.available = true;

    // IORING_REGISTER_PROBE (Linux 5.6) lists the opcodes this kernel knows; a kernel without it
    // predates most of what we use anyway.
    std::unique_ptr<io_uring_probe, ProbeFree> probe(io_uring_get_probe_ring(&r.ring));
    if (probe) {
        for (size_t i = 0; i < std::size(kUringOps); ++i)
            p.ops[i].second = io_uring_opcode_supported(probe.get(), kUringOps[i].opcode) != 0;
    }
    p.multishot_accept = try_multishot_accept(r.ring);
    p.buf_ring = try_buf_ring(r.ring);
    return p;
}

}  // namespace ztp::io
