// The relay core: one engine per direction of a connection, whatever the media at its ends.
//
//   Source ──read into a chunk's tail──▶ stage (RedactionStage) ──RewritePlan──▶ Sink
//
// A Source adapter reads its medium (a client record path, a backend socket) into room() the
// direction hands out from its ChunkArena, and reports what arrived with received(); the direction
// feeds it to its stage (pass-through on a direction without rules) and queues what comes out as
// one RewritePlan. A Sink adapter takes that plan (take()) and writes it to its medium (sendmsg of
// the plan's iovecs into an io::InFlight op record, or record-path writes), reporting sent(). When
// the source ended and nothing is queued, the sink ends its side (shutdown(SHUT_WR) towards the
// backend, close_notify towards the client): the end is the last item of the queue.
//
// Leases, not flags: every byte of the queue lives in a chunk the plan (or the stage's held-back
// bytes, or the sink's op record) references; reads go only into the chunk's tail past every byte
// handed out, so nothing queued or in flight is ever written again, and a chunk returns to its
// pool (or the heap) only when its last reference died.
//
// Bounds: a direction hands out no room while `max_chunks` of its chunks are alive or
// `max_segments` plan segments are queued (the plan's and the sink's): the source stops reading
// (back-pressure) and is pumped again once the sink made progress. It never fails a connection.
//
// Pauses: a source that drained its medium calls drained(); with bytes held back by the stage, the
// direction's QuietTimer runs, and if nothing arrived when it fires the stage's on_pause decides
// what the held bytes become (redaction_stage.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "proxy/conn/redaction_stage.hpp"
#include "proxy/conn/relay.hpp"
#include "proxy/io/chunk_arena.hpp"

namespace ztp::conn::core {

class Direction;

// Reads one medium into its direction. pump() reads while the direction has room and the medium
// has bytes, and returns once it waits (an op in flight, readiness armed) or is at the cap.
class Source {
public:
    virtual ~Source() = default;
    virtual void pump() = 0;
};

// Writes a direction's output to one medium. pump() takes what is queued and writes it; once the
// direction is finishing() and the sink holds nothing, it ends its side and calls finished().
class Sink {
public:
    virtual ~Sink() = default;
    virtual void pump() = 0;
    // What the sink took and has not written yet (in an op record, or partly written).
    virtual size_t held_segments() const = 0;
    virtual bool holds_bytes() const = 0;
    // The connection ends now with nothing queued: end this side if possible, best effort, never
    // blocking (the client's close_notify; nothing towards the backend, whose socket just closes).
    virtual void goodbye() {}
};

// How a relay ends, shared by its two directions: the first failure ends the connection (its
// close reason counted by note_relay_close), the first source to end names the clean close, and
// the relay finished once both directions delivered their end.
class Ending {
public:
    explicit Ending(RelayHost& host) : host_(host) {}
    bool failed() const { return failed_; }
    void fail(const char* reason, const std::string& detail);
    // Stops the relay without reporting yet (a fatal alert must reach the client first; its owner
    // reports through RelayHost once it is out). False when the relay had already failed.
    bool halt() { return !std::exchange(failed_, true); }
    void source_ended(const char* who) {
        if (!first_close_) first_close_ = who;
    }
    void direction_done();

private:
    RelayHost& host_;
    bool failed_ = false;
    int done_ = 0;
    const char* first_close_ = nullptr;
};

struct DirectionConfig {
    bool up;             // client → backend (the counters it adds to)
    size_t chunk_size;   // bytes per chunk
    size_t min_read;     // a fresh chunk once the tail is shorter
    size_t max_chunks;   // chunks alive before the source stops reading
    size_t max_segments; // plan segments queued before the source stops reading
    io::BufferPool* pool;  // chunks from the worker's pool (warm pages), or nullptr: the heap
};

class Direction {
public:
    Direction(RelayHost& host, Ending& ending, RelayCounters& counters, const DirectionConfig& config,
              RedactionStage stage, uint8_t quiet_tag);
    Direction(const Direction&) = delete;
    Direction& operator=(const Direction&) = delete;

    void attach(Source& source, Sink& sink) {
        source_ = &source;
        sink_ = &sink;
    }
    // Pumps the source, then the sink, until neither can move (completions call this).
    void kick();

    // ---- for the source
    // True while the source may read: not failed, its input not ended.
    bool reading() const { return !ending_.failed() && !input_ended_; }
    // Room for the next read at the tail of the current chunk, or empty at a cap (back-pressure:
    // the source is pumped again when the sink made progress).
    std::span<uint8_t> room();
    // The chunk room() points into, for the op record of a receive into it.
    std::shared_ptr<const void> room_lease() const { return arena_.lease(); }
    // `n` bytes landed at the start of room(). Reads that land back to back in a chunk go to the
    // stage as one span at the end of the pass (a plan segment per 1-byte record would cost more
    // than the byte).
    void received(size_t n);
    // The pass ends: what was received goes to the stage. `drained`: the medium has nothing more for
    // now, so held-back bytes wait for a pause.
    void end_pass(bool drained);
    // The input ended (FIN, close_notify): the stage releases what it held.
    void input_ended(const char* who);
    // The source waits idle: the current chunk goes back unless something still references it.
    void idle() { arena_.release_if_unused(); }
    // Bytes in the source's own memory (a gated slot's verified plaintext), fed as they are.
    void deliver(redact::SharedBytes bytes);
    // The source refuses the rest of its input (a bad record): nothing more is read, and once
    // everything before it left, `refusal` runs instead of the end of the stream.
    void input_refused(std::function<void()> refusal);
    // Sources that bring their own memory: a batch more waits behind what the sink holds, or the
    // segment cap is reached: stop reading.
    bool full() const;

    // ---- for the sink
    // Everything the stage produced so far goes into `into` (the sink's plan, written in full
    // before it takes again; what it referenced is dropped first).
    void take(redact::RewritePlan& into);
    // `n` bytes of what the sink took left towards its medium.
    void sent(size_t n);
    // The input ended and everything before the end was taken: the sink ends its side now.
    bool finishing() const { return input_ended_ && out_.empty() && unfed_.empty(); }
    void finished();
    bool done() const { return done_; }
    // At finishing(): runs the source's refusal if it had one (true: the stream does not end).
    bool refused();

    // ---- for the relay
    void on_quiet();
    // Bytes still on their way out (queued, held back or taken by the sink, not yet written).
    bool queued() const;
    // Ends the connection now: the sink's goodbye if nothing is queued, else a counted truncation.
    void say_goodbye();
    void fail(const char* reason, const std::string& detail) { ending_.fail(reason, detail); }
    // Stops the relay without reporting yet (Ending::halt): a fatal alert goes out first.
    bool halt() { return ending_.halt(); }
    bool failed() const { return ending_.failed(); }
    RelayCounters& counters() { return counters_; }
    bool rewrites() const { return stage_.rewrites(); }
    bool up() const { return config_.up; }

private:
    bool feed();

    RelayHost& host_;
    Ending& ending_;
    RelayCounters& counters_;
    DirectionConfig config_;
    RedactionStage stage_;
    QuietTimer quiet_;
    io::ChunkArena arena_;
    Source* source_ = nullptr;
    Sink* sink_ = nullptr;

    std::shared_ptr<const void> unfed_owner_;
    std::span<const uint8_t> unfed_;  // received this pass, not yet fed to the stage
    redact::RewritePlan out_;         // the stage's output, not yet taken by the sink
    uint64_t feeds_ = 0;
    std::function<void()> refusal_;
    bool input_ended_ = false;
    bool done_ = false;
    // kick() re-entered from inside a pump (a sink's progress while the source pumps): loop again.
    bool kicking_ = false, kick_again_ = false;
};

}  // namespace ztp::conn::core
