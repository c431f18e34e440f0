// PipeSpill: plaintext on its way into a splice pipe that had to pass through user space (the
// splice relay read an application data record on its control-record path). The pipe may have
// less room than the record: write_to() puts in what fits and keeps the rest, in order; the caller
// calls it again once the pipe drained, before anything new is spliced in behind it. What it held
// is scrubbed as soon as it is in the pipe (and on destruction).
#pragma once

#include <cstddef>
#include <string>

#include "proxy/base/result.hpp"

namespace ztp::io {

class PipeSpill {
public:
    PipeSpill() = default;
    PipeSpill(const PipeSpill&) = delete;
    PipeSpill& operator=(const PipeSpill&) = delete;
    ~PipeSpill() { clear(); }

    // Takes `bytes` after whatever is still held.
    void hold(std::string bytes);
    bool empty() const { return off_ == bytes_.size(); }
    size_t size() const { return bytes_.size() - off_; }

    // Writes as much as the non-blocking pipe `write_end` takes; the bytes written (0 when it is
    // full). Errors other than EAGAIN are the pipe's errno.
    Result<size_t> write_to(int write_end);

private:
    void clear();

    std::string bytes_;
    size_t off_ = 0;
};

}  // namespace ztp::io
