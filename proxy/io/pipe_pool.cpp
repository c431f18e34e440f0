#include "proxy/io/pipe_pool.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

namespace ztp::io {

Result<Pipe> PipePool::take() {
    if (!idle_.empty()) {
        Pipe p = std::move(idle_.back());
        idle_.pop_back();
        return p;
    }
    int fds[2];
    // Non-blocking ends: a full or empty pipe must give EAGAIN to the splice, never park a
    // kernel worker thread.
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return errno_error("pipe2");
    Pipe p{UniqueFd(fds[0]), UniqueFd(fds[1]), 0};
    int got = ::fcntl(p.write_end.get(), F_SETPIPE_SZ, static_cast<int>(capacity_));
    if (got < 0) got = ::fcntl(p.write_end.get(), F_GETPIPE_SZ);  // over pipe-max-size: keep the default
    if (got < 0) return errno_error("F_GETPIPE_SZ");
    p.capacity = static_cast<size_t>(got);
    ++created_;
    return p;
}

void PipePool::give_back(Pipe pipe, size_t bytes_inside) {
    int queued = 0;
    // Trust the kernel over the caller's bookkeeping: FIONREAD says what is really inside.
    if (bytes_inside != 0 || ::ioctl(pipe.read_end.get(), FIONREAD, &queued) != 0 || queued != 0) return;
    if (idle_.size() >= max_idle_) return;
    idle_.push_back(std::move(pipe));
}

}  // namespace ztp::io
