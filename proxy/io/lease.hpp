// Leases and op records: who may touch a piece of memory while the kernel works on it.
//
// A LEASE is a move-only handle on memory that came from a pool: BufferLease (a relay buffer,
// buffer_pool.hpp), GatedBuffer / VerifiedBytes (a gated slot, gated_pool.hpp), a heap chunk under
// a ChunkArena (chunk_arena.hpp), a Pipe (pipe_pool.hpp). The memory goes back to its pool only
// when its last lease dies, and nothing can write into it without holding the lease.
//
// An OP RECORD (InFlight<Body>) is the state of one io_uring operation: the Op the completion
// arrives through and a Body holding the leases on every byte the operation reads or writes, plus
// the iovecs / msghdr the kernel reads (they must live as long as the op). The submitter fills the
// body (body()), then start() hands it to the kernel: from then until the completion nobody can
// reach the body mutably, so the memory cannot be rewritten, resealed or recycled, and a second op
// on the same record cannot be started (asserted). The completion handler calls finish() and gets
// the body back, leases included: it moves them on (to the next op, back into the relay's state)
// or drops them, which returns the memory. A short send resubmits the same record with again().
//
// "Is this buffer busy?" is therefore never a flag: a busy buffer is one whose lease sits in a
// pending op record.
#pragma once

#include <cassert>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <vector>
#include <utility>

#include "proxy/io/event_loop.hpp"

namespace ztp::io {

template <typename Body>
class InFlight {
public:
    InFlight(CompletionHandler* handler, uint8_t tag) : op_{handler, tag} {}
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;

    bool pending() const { return pending_; }
    // The tag its completions arrive with.
    uint8_t tag() const { return op_.tag; }

    // The body, to be filled before start(). Not while the op is pending.
    Body& body() {
        assert(!pending_ && "op record written while its op is in flight");
        return body_;
    }
    // What the pending op holds, read-only (e.g. to account for its bytes).
    const Body& held() const { return body_; }

    // The kernel owns the body from now on; submit the returned Op.
    Op* start() {
        assert(!pending_ && "second op on a record still in flight");
        pending_ = true;
        return &op_;
    }
    // A short send goes on with the same record (the body stays the kernel's).
    Op* again() {
        assert(pending_);
        return &op_;
    }
    // Body& of a pending op, for the completion handler to advance a partial send before again().
    Body& completing() {
        assert(pending_);
        return body_;
    }
    // The completion arrived: the leases come back to the caller.
    Body finish() {
        assert(pending_ && "completion for an op that was not in flight");
        pending_ = false;
        return std::exchange(body_, Body{});
    }

private:
    Op op_;
    Body body_{};
    bool pending_ = false;
};

// A short send took `sent` bytes of iov[first..]: advances past them (trimming a partly sent iovec
// in place) and returns the first iovec not yet sent in full.
inline size_t advance_iovecs(std::vector<iovec>& iov, size_t first, size_t sent) {
    while (sent > 0 && first < iov.size()) {
        if (sent >= iov[first].iov_len) {
            sent -= iov[first].iov_len;
            ++first;
        } else {
            iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + sent;
            iov[first].iov_len -= sent;
            sent = 0;
        }
    }
    return first;
}

}  // namespace ztp::io
