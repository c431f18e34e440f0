// PipePool: pipes for splice, per worker. The rule that matters (HAProxy's): a pipe goes back
// to the pool only when it is empty. A pipe that still holds bytes is closed, because whatever
// it holds is some connection's plaintext and must never reach another connection.
//
// A pipe is sized with F_SETPIPE_SZ. The kernel may refuse (EPERM above fs.pipe-max-size, or once
// the user's pipes are over fs.pipe-user-pages-soft, where new pipes also start with 2 slots
// instead of 16): the pipe is then used at the size it has (`Pipe::capacity` is always the
// kernel's F_GETPIPE_SZ), the failure is counted and logged (rate-limited), and the pipe is not
// kept for reuse, so a later connection tries again.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "proxy/base/log_limiter.hpp"
#include "proxy/base/result.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::io {

struct Pipe {
    UniqueFd read_end;
    UniqueFd write_end;
    size_t capacity = 0;  // bytes the pipe holds before a write would block (F_GETPIPE_SZ)
};

class PipePool {
public:
    // `capacity` is rounded up by the kernel to a power of two, at least a page; `max_idle` pipes
    // are kept for reuse. `resize_failures_total`, when given, is bumped on every failed resize
    // too (the process-wide metric; the pool is one worker's).
    PipePool(size_t capacity, size_t max_idle, std::atomic<uint64_t>* resize_failures_total = nullptr)
        : capacity_(capacity), max_idle_(max_idle), resize_failures_total_(resize_failures_total) {}

    Result<Pipe> take();
    // `bytes_inside` is what the caller still believes the pipe holds; non-zero closes it.
    void give_back(Pipe pipe, size_t bytes_inside);

    size_t idle() const { return idle_.size(); }
    size_t created() const { return created_; }
    size_t resize_failures() const { return resize_failures_; }  // pipes that kept a size other than asked

private:
    void resize_failed(int err, size_t kept);

    size_t capacity_;
    size_t max_idle_;
    std::atomic<uint64_t>* resize_failures_total_;
    size_t created_ = 0;
    size_t resize_failures_ = 0;
    log::LogLimiter resize_log_{1};  // one line a second per worker: every new pipe can fail alike
    std::vector<Pipe> idle_;
};

}  // namespace ztp::io
