// ChunkArena: one relay direction's chunks of plaintext (the relay core's directions,
// relay_core/direction.hpp; the userspace path's rule routes towards the client), bounded in
// chunks: the unit that costs memory. Chunks come from the heap, or from the worker's BufferPool
// (warm pages reused; the chunk is then a prefix of a pooled buffer, its BufferLease held by the
// chunk's owner until the last reference died).
//
// Reads go into the free tail of the current chunk, so one chunk holds many small reads: a 1-byte
// TLS record costs one byte of a chunk, not a chunk of its own. A fresh chunk is taken only when the
// tail is shorter than `min_read`. Every chunk is a lease (a shared_ptr whose deleter counts it out):
// alive while the arena, a rewrite plan, the redaction stage's held-back bytes or an in-flight op
// references it. space() hands out nothing once `max_chunks` are alive: the direction stops
// reading (back-pressure) until its output left and the chunks died. It never fails a connection.
// Writes go only into the tail past every byte handed out by commit(): bytes a plan or an op holds
// are never written again.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>

#include "proxy/io/buffer_pool.hpp"

namespace ztp::io {

class ChunkArena {
public:
    ChunkArena(size_t chunk_size, size_t min_read, size_t max_chunks, BufferPool* pool = nullptr)
        : size_(pool ? std::min(chunk_size, pool->buffer_size()) : chunk_size),
          min_read_(std::min(min_read, size_)),
          max_(max_chunks),
          pool_(pool) {}

    // Room for the next read (at least min_read bytes), or empty at the cap.
    std::span<uint8_t> space() {
        if (current_ && size_ - used_ >= min_read_) return {current_.get() + used_, size_ - used_};
        current_.reset();  // too short a tail: dies once what it holds was sent
        used_ = 0;
        if (count_->live >= max_) return {};
        ++count_->live;
        if (pool_) {
            auto owner = std::make_shared<Pooled>(pool_->take(), count_);
            current_ = std::shared_ptr<uint8_t[]>(owner, owner->lease.data());
        } else {
            current_ = std::shared_ptr<uint8_t[]>(new uint8_t[size_], [count = count_](uint8_t* p) {
                delete[] p;
                --count->live;
            });
        }
        return {current_.get(), size_};
    }

    // The source waits idle: the current chunk goes (back to its pool) unless a plan, held-back
    // bytes or an op still reference it; idle connections hold no chunk.
    void release_if_unused() {
        if (current_ && current_.use_count() == 1) {
            current_.reset();
            used_ = 0;
        }
    }

    // The chunk space() pointed into, for an op record to hold while the kernel writes there.
    std::shared_ptr<const void> lease() const { return current_; }

    // A read wrote `n` bytes at the start of space(): they are final; the owner keeps them alive.
    std::pair<std::shared_ptr<const void>, std::span<const uint8_t>> commit(size_t n) {
        std::span<const uint8_t> bytes(current_.get() + used_, n);
        used_ += n;
        return {current_, bytes};
    }

    size_t live() const { return count_->live; }
    size_t max_chunks() const { return max_; }

private:
    struct Count {
        size_t live = 0;
    };
    struct Pooled {
        Pooled(BufferLease l, std::shared_ptr<Count> c) : lease(std::move(l)), count(std::move(c)) {}
        ~Pooled() { --count->live; }
        BufferLease lease;
        std::shared_ptr<Count> count;
    };
    size_t size_;
    size_t min_read_;
    size_t max_;
    BufferPool* pool_;
    std::shared_ptr<Count> count_ = std::make_shared<Count>();
    std::shared_ptr<uint8_t[]> current_;
    size_t used_ = 0;
};

}  // namespace ztp::io
