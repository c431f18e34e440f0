#include "proxy/redact/stream_matcher.hpp"

#include <array>
#include <climits>
#include <new>
#include <string>

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

// The engine (Vectorscan 5.4.9, Debian bookworm) misses matches on AVX-512 hosts when one scan
// call covers 64 bytes or more: its 64-byte vector paths skip candidates (upstream
// VectorCamp/vectorscan#375 and #378). With the rules "a" and "ab", the "a" that ends 70 bytes of
// "x" is never reported; cut the same bytes at 68 and it is. Left alone, whether a secret is masked
// would depend on how TLS records happened to cut the stream (found by redact_fuzz). Calls of at
// most 63 bytes never take those paths, so when the running engine fails the probe below, every
// scan is made in such pieces: slower (per-call overhead, ~20x on one core), never wrong.
constexpr size_t kShortScan = 63;

// True when the engine misses a match that a short scan finds. Runs once per process; a probe that
// cannot even compile or scan counts as buggy (fail closed: short scans are always correct).
bool engine_misses_long_scans() {
    struct Case {
        std::array<const char*, 2> patterns;
        std::string input;
    };
    const Case cases[] = {
        {{"a", "ab"}, std::string(70, 'x') + "a"},
        {{R"(S\x0b\x07T\x05E\x03)", "S"}, std::string(74, '\xf9') + "STRET c"},
    };
    for (const Case& c : cases) {
        const unsigned flags[] = {HS_FLAG_SOM_LEFTMOST, HS_FLAG_SOM_LEFTMOST};
        const unsigned ids[] = {0, 1};
        hs_database_t* db = nullptr;
        hs_compile_error_t* err = nullptr;
        if (hs_compile_multi(c.patterns.data(), flags, ids, 2, HS_MODE_STREAM | HS_MODE_SOM_HORIZON_LARGE,
                             nullptr, &db, &err) != HS_SUCCESS) {
            hs_free_compile_error(err);
            return true;
        }
        HsDatabasePtr owned(db);
        hs_scratch_t* raw = nullptr;
        if (hs_alloc_scratch(db, &raw) != HS_SUCCESS) return true;
        HsScratchPtr scratch(raw);
        unsigned found = 0;
        auto count = [](unsigned id, unsigned long long, unsigned long long, unsigned, void* ctx) -> int {
            if (id == 1) ++*static_cast<unsigned*>(ctx);
            return 0;
        };
        hs_stream_t* stream = nullptr;
        if (hs_open_stream(db, 0, &stream) != HS_SUCCESS) return true;
        hs_error_t rc = hs_scan_stream(stream, c.input.data(), static_cast<unsigned>(c.input.size()), 0,
                                       scratch.get(), count, &found);
        hs_close_stream(stream, scratch.get(), count, &found);
        if (rc != HS_SUCCESS || found != 1) return true;
    }
    return false;
}

size_t scan_piece() {
    static const size_t piece = engine_misses_long_scans() ? kShortScan : UINT_MAX / 2;
    return piece;
}

}  // namespace

bool engine_needs_short_scans() { return scan_piece() == kShortScan; }

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
    // The engine takes an unsigned int length: scan very large inputs in pieces (short ones on an
    // engine that misses matches in long scans, see scan_piece()).
    const size_t piece = scan_piece();
    while (!bytes.empty()) {
        size_t n = std::min(bytes.size(), piece);
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
