// StreamMatcher: one direction of one connection, scanned by the engine in stream mode. Matches are
// reported with absolute stream offsets and may span any number of feed() calls (TLS records,
// reads). The engine keeps the partial-match state (hs_stream_t); nothing of the input is retained.
//
// What the engine reports (HS_FLAG_SOM_LEFTMOST): for every end offset at which a rule matches,
// one span [from, to) with the LEFTMOST start of a match ending there. The union of these spans is
// exactly the union of all matching substrings, which is what the rewriter needs.
// Patterns ending in an assertion (\b, $, ...) are reported one byte late, or at close().
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "proxy/base/result.hpp"
#include "proxy/redact/rule_set.hpp"

namespace ztp::redact {

struct Match {
    uint64_t from = 0;  // absolute stream offset of the first matched byte
    uint64_t to = 0;    // one past the last
    uint32_t rule = 0;  // index into Database::rules()
};

// True when the running engine misses matches in scans of 64 bytes or more (a probe, run once per
// process; see stream_matcher.cpp). Every StreamMatcher then scans in pieces of at most 63 bytes.
bool engine_needs_short_scans();

class StreamMatcher {
public:
    StreamMatcher() = default;
    ~StreamMatcher();
    StreamMatcher(StreamMatcher&& o) noexcept;
    StreamMatcher& operator=(StreamMatcher&& o) noexcept;
    StreamMatcher(const StreamMatcher&) = delete;
    StreamMatcher& operator=(const StreamMatcher&) = delete;

    // `db` must outlive the matcher (the caller keeps the shared_ptr).
    static Result<StreamMatcher> open(const Database& db);

    // Scans the next bytes; appends the matches found to `out` (in end order, roughly).
    Result<void> feed(std::span<const uint8_t> bytes, Scratch& scratch, std::vector<Match>& out);
    // End of stream: reports matches that needed end-of-data (e.g. `foo$`). Further feeds: EPIPE.
    Result<void> close(Scratch& scratch, std::vector<Match>& out);

    uint64_t offset() const { return offset_; }
    bool closed() const { return stream_ == nullptr; }

private:
    void reset();

    hs_stream_t* stream_ = nullptr;  // the one owner: hs_close_stream in reset()
    uint64_t offset_ = 0;
};

}  // namespace ztp::redact
