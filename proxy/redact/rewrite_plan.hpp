// RewritePlan: the output of the rewriter for one step, as a chain of iovecs for sendmsg.
//
// Segments are either slices of the untouched read-only input (SharedBytes, so a gated slot or a
// record buffer stays alive until the plan is dropped, i.e. until the send completed) or
// replacement bytes the proxy wrote itself: mask runs (the default '*' points into a static buffer,
// anything else lives in one small string owned by the plan) and replacement strings. Verified
// bytes are never copied or modified; the only bytes the proxy produces are replacement segments.
//
// The iovecs point at const memory: sendmsg's iov_base is `void*` but the kernel only reads it.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "proxy/redact/shared_bytes.hpp"

namespace ztp::redact {

class RewritePlan {
public:
    RewritePlan() = default;
    // Moving must re-point the iovecs of owned segments: a short std::string keeps its bytes
    // inside the object, so they change address with it.
    RewritePlan(RewritePlan&& o) noexcept { *this = std::move(o); }
    RewritePlan& operator=(RewritePlan&& o) noexcept;
    RewritePlan(const RewritePlan&) = delete;
    RewritePlan& operator=(const RewritePlan&) = delete;
    // Exchanges two plans, capacity included (a relay hands its sink the stage's output and takes
    // the emptied plan back for the next step): no allocation, where std::swap's three moves would
    // re-point and clear three times.
    void swap(RewritePlan& o) noexcept;
    friend void swap(RewritePlan& a, RewritePlan& b) noexcept { a.swap(b); }

    // What is left to send. More than IOV_MAX (1024) segments: send the first IOV_MAX, consume().
    std::span<const iovec> iovecs() const { return {iov_.data() + first_, iov_.size() - first_}; }
    size_t bytes() const { return bytes_; }
    bool empty() const { return bytes_ == 0; }

    // After a (partial) send of n bytes: drops what was sent. References are released only by
    // clear() or destruction (cheap: they are kept until the whole plan is done).
    void consume(size_t n);
    // Drops everything; keeps capacity for reuse.
    void clear();
    // Appends a chunk untouched (a direction without rules): still no copy, the plan holds it.
    void pass_through(SharedBytes s) {
        add_source(std::move(s));
        finalize();
    }

    // Counters for the plan's segments (tests and metrics).
    size_t source_bytes() const { return source_bytes_; }            // pointing into the input
    size_t replacement_bytes() const { return replacement_bytes_; }  // written by the proxy
    size_t references() const { return refs_.size(); }               // buffers kept alive

    // The bytes, concatenated (tests, diagnostics; copies: never on the data path).
    std::string to_string() const;

private:
    friend class Rewriter;
    void add_source(SharedBytes s);
    void add_static(const char* p, size_t n);
    // Replacement bytes appended to the plan's own string: remembered as offsets until finalize()
    // (the string may grow), then turned into pointers (re-based if the string moved).
    void add_owned(std::string_view bytes);
    void finalize();

    enum class Kind { none, source, fixed, owned };
    std::vector<iovec> iov_;
    std::vector<size_t> owned_idx_;  // indexes into iov_ of segments in owned_
    size_t owned_resolved_ = 0;      // owned_idx_[0, this) hold pointers, the rest offsets
    const char* owned_base_ = nullptr;
    Kind last_ = Kind::none;
    std::vector<SharedBytes> refs_;
    std::string owned_;
    size_t first_ = 0;
    size_t bytes_ = 0;
    size_t source_bytes_ = 0;
    size_t replacement_bytes_ = 0;
};

}  // namespace ztp::redact
