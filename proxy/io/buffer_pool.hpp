// BufferPool: fixed-size plaintext buffers for relays, per worker thread. Connections take one
// only while data flows and give it back when idle, so idle connections cost no buffer memory;
// the pool keeps returned buffers (up to a cap) so the next response reuses warm pages instead
// of allocating, zero-filling and faulting in fresh ones every time.
//
// A buffer is handed out as a BufferLease (proxy/io/lease.hpp): a move-only handle, and the only
// way back into the pool is that lease's death. Whoever submits an io_uring op on a buffer moves
// the lease into the op's record (io::InFlight) until its completion, so a buffer still on its way
// to the kernel cannot be written, resealed or given back: there is no lease to do it with.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#ifndef NDEBUG
#include <unordered_set>
#endif

namespace ztp::io {

class BufferPool;

class BufferLease {
public:
    BufferLease() = default;
    ~BufferLease() { reset(); }
    BufferLease(BufferLease&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), buf_(std::move(o.buf_)) {}
    BufferLease& operator=(BufferLease&& o) noexcept {
        if (this != &o) {
            reset();
            pool_ = std::exchange(o.pool_, nullptr);
            buf_ = std::move(o.buf_);
        }
        return *this;
    }
    BufferLease(const BufferLease&) = delete;
    BufferLease& operator=(const BufferLease&) = delete;

    explicit operator bool() const { return buf_ != nullptr; }
    uint8_t* data() const { return buf_.get(); }
    size_t size() const;
    // Back to the pool (a no-op on an empty lease).
    void reset();

private:
    friend class BufferPool;
    BufferLease(BufferPool* pool, std::unique_ptr<uint8_t[]> buf) : pool_(pool), buf_(std::move(buf)) {}

    BufferPool* pool_ = nullptr;
    std::unique_ptr<uint8_t[]> buf_;
};

class BufferPool {
public:
    BufferPool(size_t buffer_size, size_t max_idle) : size_(buffer_size), max_idle_(max_idle) {}
    ~BufferPool() { assert(leased_ == 0 && "a BufferLease outlived its BufferPool"); }
    BufferPool(const BufferPool&) = delete;
    BufferPool& operator=(const BufferPool&) = delete;

    size_t buffer_size() const { return size_; }

    BufferLease take() {
        std::unique_ptr<uint8_t[]> b;
        if (idle_.empty()) {
            b = std::make_unique_for_overwrite<uint8_t[]>(size_);
        } else {
            b = std::move(idle_.back());
            idle_.pop_back();
        }
#ifndef NDEBUG
        // The pool never hands out a buffer a lease still holds.
        [[maybe_unused]] const bool fresh = live_.insert(b.get()).second;
        assert(fresh && "BufferPool handed out a leased buffer");
#endif
        ++leased_;
        return BufferLease(this, std::move(b));
    }

    size_t idle() const { return idle_.size(); }
    // Buffers out on a lease right now: the relay-core tests check it drops back to zero.
    size_t leased() const { return leased_; }

private:
    friend class BufferLease;
    // Their old contents are not cleared: a relay only ever sends bytes it wrote into a buffer
    // after taking it.
    void give_back(std::unique_ptr<uint8_t[]> b) {
#ifndef NDEBUG
        [[maybe_unused]] const size_t was_leased = live_.erase(b.get());
        assert(was_leased == 1 && "a buffer came back twice");
#endif
        --leased_;
        if (idle_.size() < max_idle_) idle_.push_back(std::move(b));
    }

    size_t size_;
    size_t max_idle_;
    size_t leased_ = 0;
    std::vector<std::unique_ptr<uint8_t[]>> idle_;
#ifndef NDEBUG
    std::unordered_set<const uint8_t*> live_;
#endif
};

inline size_t BufferLease::size() const { return buf_ ? pool_->buffer_size() : 0; }

inline void BufferLease::reset() {
    if (buf_) std::exchange(pool_, nullptr)->give_back(std::move(buf_));
}

}  // namespace ztp::io
