// PipePool: pipes for splice, per worker. The rule that matters (HAProxy's): a pipe goes back
// to the pool only when it is empty. A pipe that still holds bytes is closed, because whatever
// it holds is some connection's plaintext and must never reach another connection.
#pragma once

#include <cstddef>
#include <vector>

#include "proxy/base/result.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::io {

struct Pipe {
    UniqueFd read_end;
    UniqueFd write_end;
    size_t capacity = 0;  // bytes the pipe holds before a write would block
};

class PipePool {
public:
    // `capacity` is rounded by the kernel to whole pages; `max_idle` pipes are kept for reuse.
    PipePool(size_t capacity, size_t max_idle) : capacity_(capacity), max_idle_(max_idle) {}

    Result<Pipe> take();
    // `bytes_inside` is what the caller still believes the pipe holds; non-zero closes it.
    void give_back(Pipe pipe, size_t bytes_inside);

    size_t idle() const { return idle_.size(); }
    size_t created() const { return created_; }

private:
    size_t capacity_;
    size_t max_idle_;
    size_t created_ = 0;
    std::vector<Pipe> idle_;
};

}  // namespace ztp::io
