#include "proxy/io/pipe_pool.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "proxy/base/log.hpp"

namespace ztp::io {

Result<Pipe> PipePool::take() {
    if (!idle_.empty()) {
        Pipe p = std::move(idle_.back());
        idle_.pop_back();
        return p;
    }
    int fds[2];
    // Non-blocking ends: a full or empty pipe must give EAGAIN to the splice, never park a
    // kernel worker thread. Over fs.pipe-user-pages-hard the kernel refuses the pipe (ENFILE).
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return errno_error("pipe2");
    Pipe p{UniqueFd(fds[0]), UniqueFd(fds[1]), 0};
    // F_SETPIPE_SZ returns the size it set (rounded up to a power of two). When it fails the pipe
    // keeps what the kernel gave it at creation (16 slots, or 2 once the user is over
    // fs.pipe-user-pages-soft), and F_GETPIPE_SZ says how much that is: the relay fills the pipe
    // up to `capacity`, so it must be the kernel's number, never the one asked for.
    int got = ::fcntl(p.write_end.get(), F_SETPIPE_SZ, static_cast<int>(capacity_));
    if (got < 0) {
        const int err = errno;
        got = ::fcntl(p.write_end.get(), F_GETPIPE_SZ);
        if (got < 0) return errno_error("F_GETPIPE_SZ");
        resize_failed(err, static_cast<size_t>(got));
    }
    p.capacity = static_cast<size_t>(got);
    ++created_;
    return p;
}

void PipePool::resize_failed(int err, size_t kept) {
    ++resize_failures_;
    if (resize_failures_total_) resize_failures_total_->fetch_add(1, std::memory_order_relaxed);
    auto held_back = resize_log_.allow(log::LogLimiter::Clock::now());
    if (!held_back) return;
    log::conn().warn("splice pipe: cannot size it to {} bytes ({}); it holds {} bytes: raise fs.pipe-max-size or "
                     "fs.pipe-user-pages-soft, or lower limits.connection_buffer (README \"Relay memory bounds\"; "
                     "ztproxy_pipe_resize_failures_total counts them){}",
                     capacity_, std::strerror(err), kept,
                     *held_back ? " (" + std::to_string(*held_back) + " more since the last such line)" : "");
}

void PipePool::give_back(Pipe pipe, size_t bytes_inside) {
    int queued = 0;
    // Trust the kernel over the caller's bookkeeping: FIONREAD says what is really inside.
    if (bytes_inside != 0 || ::ioctl(pipe.read_end.get(), FIONREAD, &queued) != 0 || queued != 0) return;
    // A pipe that did not get its size is closed (its pages go back to the user's budget): the next
    // connection gets a new pipe and another try, e.g. once the user is back under the soft limit.
    if (pipe.capacity < capacity_) return;
    if (idle_.size() >= max_idle_) return;
    idle_.push_back(std::move(pipe));
}

}  // namespace ztp::io
