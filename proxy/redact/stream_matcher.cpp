#include "proxy/redact/stream_matcher.hpp"

#include <climits>
#include <new>

namespace ztp::redact {

namespace {

struct Sink {
    std::vector<Match>* out;
    bool failed = false;
};

// Called by the engine (C code) for each match: no exception may leave it.
int on_match(unsigned id, unsigned long long from, unsigned long long to, unsigned, void* ctx) {
    auto* sink = static_cast<Sink*>(ctx);
    try {
        sink->out->push_back(Match{from, to, id});
        return 0;
    } catch (const std::bad_alloc&) {
        sink->failed = true;
        return 1;  // stop scanning: the caller turns this into ENOMEM
    }
}

Result<void> scan_error(hs_error_t rc, const Sink& sink, const char* what) {
    if (sink.failed) return Error{ENOMEM, what};
    if (rc == HS_SCAN_TERMINATED) return Error{ENOMEM, what};
    if (rc == HS_NOMEM) return Error{ENOMEM, what};
    return Error{EINVAL, what};  // HS_INVALID / HS_SCRATCH_IN_USE: a programming error
}

}  // namespace

StreamMatcher::~StreamMatcher() { reset(); }

StreamMatcher::StreamMatcher(StreamMatcher&& o) noexcept : stream_(o.stream_), offset_(o.offset_) {
    o.stream_ = nullptr;
}

StreamMatcher& StreamMatcher::operator=(StreamMatcher&& o) noexcept {
    if (this != &o) {
        reset();
        stream_ = o.stream_;
        offset_ = o.offset_;
        o.stream_ = nullptr;
    }
    return *this;
}

void StreamMatcher::reset() {
    // Without a scratch the engine frees the state and reports nothing (abandoned connection).
    if (stream_) hs_close_stream(stream_, nullptr, nullptr, nullptr);
    stream_ = nullptr;
}

Result<StreamMatcher> StreamMatcher::open(const Database& db) {
    StreamMatcher m;
    hs_error_t rc = hs_open_stream(db.get(), 0, &m.stream_);
    if (rc != HS_SUCCESS) return Error{rc == HS_NOMEM ? ENOMEM : EINVAL, "hs_open_stream"};
    return m;
}

Result<void> StreamMatcher::feed(std::span<const uint8_t> bytes, Scratch& scratch, std::vector<Match>& out) {
    if (!stream_) return Error{EPIPE, "redaction stream already closed"};
    Sink sink{&out};
    // The engine takes an unsigned int length: scan very large inputs in pieces.
    while (!bytes.empty()) {
        size_t n = std::min<size_t>(bytes.size(), UINT_MAX / 2);
        hs_error_t rc = hs_scan_stream(stream_, reinterpret_cast<const char*>(bytes.data()),
                                       static_cast<unsigned>(n), 0, scratch.get(), on_match, &sink);
        if (rc != HS_SUCCESS || sink.failed) return scan_error(rc, sink, "hs_scan_stream");
        offset_ += n;
        bytes = bytes.subspan(n);
    }
    return {};
}

Result<void> StreamMatcher::close(Scratch& scratch, std::vector<Match>& out) {
    if (!stream_) return {};
    Sink sink{&out};
    hs_error_t rc = hs_close_stream(stream_, scratch.get(), on_match, &sink);
    stream_ = nullptr;  // freed whatever the outcome
    if (rc != HS_SUCCESS || sink.failed) return scan_error(rc, sink, "hs_close_stream");
    return {};
}

}  // namespace ztp::redact
