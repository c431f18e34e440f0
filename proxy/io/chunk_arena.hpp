// ChunkArena: one relay direction's heap chunks of plaintext (the rewrite relay both ways; the
// userspace path's rule routes towards the client), bounded in chunks: the unit that costs memory.
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

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>

namespace ztp::io {

class ChunkArena {
public:
    ChunkArena(size_t chunk_size, size_t min_read, size_t max_chunks)
        : size_(chunk_size), min_read_(std::min(min_read, chunk_size)), max_(max_chunks) {}

    // Room for the next read (at least min_read bytes), or empty at the cap.
    std::span<uint8_t> space() {
        if (current_ && size_ - used_ >= min_read_) return {current_.get() + used_, size_ - used_};
        current_.reset();  // too short a tail: dies once what it holds was sent
        used_ = 0;
        if (count_->live >= max_) return {};
        ++count_->live;
        current_ = std::shared_ptr<uint8_t[]>(new uint8_t[size_], [count = count_](uint8_t* p) {
            delete[] p;
            --count->live;
        });
        return {current_.get(), size_};
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
    size_t size_;
    size_t min_read_;
    size_t max_;
    std::shared_ptr<Count> count_ = std::make_shared<Count>();
    std::shared_ptr<uint8_t[]> current_;
    size_t used_ = 0;
};

}  // namespace ztp::io
