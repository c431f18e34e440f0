#include "proxy/io/pipe_spill.hpp"

#include <string.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace ztp::io {

void PipeSpill::hold(std::string bytes) {
    if (empty()) {
        clear();
        bytes_ = std::move(bytes);
        return;
    }
    // Appending in place could reallocate and free a copy unscrubbed: build the whole anew.
    std::string merged;
    merged.reserve(size() + bytes.size());
    merged.append(bytes_, off_, std::string::npos).append(bytes);
    explicit_bzero(bytes.data(), bytes.size());
    clear();
    bytes_ = std::move(merged);
}

Result<size_t> PipeSpill::write_to(int write_end) {
    size_t written = 0;
    while (!empty()) {
        // Kernel contract: a non-blocking pipe takes a partial write when it has some room (writes
        // up to PIPE_BUF are all or nothing) and gives EAGAIN when it has none.
        const ssize_t n = ::write(write_end, bytes_.data() + off_, size());
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return errno_error("write to splice pipe");
        }
        off_ += static_cast<size_t>(n);
        written += static_cast<size_t>(n);
    }
    if (empty()) clear();
    return written;
}

void PipeSpill::clear() {
    // Some connection's plaintext: it must not linger in freed memory.
    explicit_bzero(bytes_.data(), bytes_.size());
    bytes_.clear();
    off_ = 0;
}

}  // namespace ztp::io
