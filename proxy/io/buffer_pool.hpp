// BufferPool: fixed-size plaintext buffers for relays, per worker thread. Connections take one
// only while data flows and give it back when idle, so idle connections cost no buffer memory;
// the pool keeps returned buffers (up to a cap) so the next response reuses warm pages instead
// of allocating, zero-filling and faulting in fresh ones every time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace ztp::io {

class BufferPool {
public:
    BufferPool(size_t buffer_size, size_t max_idle) : size_(buffer_size), max_idle_(max_idle) {}

    size_t buffer_size() const { return size_; }

    std::unique_ptr<uint8_t[]> take() {
        if (idle_.empty()) return std::make_unique_for_overwrite<uint8_t[]>(size_);
        auto b = std::move(idle_.back());
        idle_.pop_back();
        return b;
    }

    // Only buffers from take() come back. Their old contents are not cleared: a relay only ever
    // sends bytes it wrote into a buffer after taking it.
    void give_back(std::unique_ptr<uint8_t[]> b) {
        if (b && idle_.size() < max_idle_) idle_.push_back(std::move(b));
    }

    size_t idle() const { return idle_.size(); }

private:
    size_t size_;
    size_t max_idle_;
    std::vector<std::unique_ptr<uint8_t[]>> idle_;
};

}  // namespace ztp::io
