// PipeDirection: one direction of the kernel record path's plain routes, on the relay core's
// Ending. kTLS decrypts client records into the socket's receive queue and encrypts what is written
// to it, so plaintext moves socket → pipe → socket by splice and never enters user space: the
// pipe is the direction's only buffer, and its lease (io::Pipe, from the worker's PipePool) is the
// direction's for the connection's whole life.
//
// Splicing is a non-blocking splice(2) from the event loop (Submitter::splice_now), driven by
// readiness: kick() moves bytes source → pipe → destination until both would block, then arms one
// io_uring POLL: readable on the source when the pipe is empty, writable on the destination when
// the pipe holds bytes. Nothing else is ever in flight, so no kernel operation holds the pipe, and
// the only ops are polls that hold nothing. (io_uring's own SPLICE runs every operation in an io-wq
// worker thread: a thread handoff per message. README "Small transfers on the kernel path".)
//
// The client end (the kTLS socket, `path`) is the source of the up direction and the destination
// of the down direction:
//   up    splice 0 → an empty record (skipped, capped) or the FIN; EINVAL/EKEYEXPIRED → a control
//         record, read with KernelRecordPath::read_control (close_notify ends the input; KeyUpdate
//         installs the next key; application data read there goes into the pipe first, counted
//         as copied); EBADMSG/EMSGSIZE → the row's alert, the connection fails.
//   down  our owed KeyUpdate goes out before the next splice into the socket (nothing is in
//         flight between two synchronous splices, so nothing is encrypted under the old key after
//         it); the end is close_notify, strictly after the pipe drained.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>

#include "crypto/kernel_record_path.hpp"
#include "proxy/conn/relay.hpp"
#include "proxy/conn/relay_core/direction.hpp"
#include "proxy/io/lease.hpp"
#include "proxy/io/pipe_pool.hpp"
#include "proxy/io/pipe_spill.hpp"

namespace ztp::conn::core {

class PipeDirection {
public:
    PipeDirection(RelayHost& host, Ending& ending, RelayCounters& counters, crypto::KernelRecordPath& path,
                  io::PipePool& pool, bool up, int src, int dst, uint8_t readable_tag, uint8_t writable_tag);
    PipeDirection(const PipeDirection&) = delete;
    PipeDirection& operator=(const PipeDirection&) = delete;
    // Only an empty pipe goes back to the pool; one still holding plaintext is closed (PipePool).
    ~PipeDirection();

    // The other direction, kicked when the client asked for our KeyUpdate (up only).
    void set_reverse(PipeDirection& reverse) { reverse_ = &reverse; }
    // Takes the direction's pipe from the pool; false (after failing the relay) without one.
    bool open();
    // Moves bytes until neither end can move more, then waits for the readiness it needs.
    void kick();
    // False when `tag` is not one of this direction's ops.
    bool on_completion(uint8_t tag, int res);
    // Plaintext still on its way out (in the pipe, or read through user space and not in it yet).
    bool queued() const { return in_pipe_ > 0 || !spill_.empty(); }
    bool done() const { return done_; }

private:
    enum class Step { moved, blocked };
    Step fill();
    Step drain();
    Step fill_from_control_record();
    Step push_spill();
    Step on_source_zero();
    Step source_error(long err);
    Step finish();
    void wait_readable();
    void wait_writable();
    uint64_t& bytes() { return up_ ? counters_.bytes_up : counters_.bytes_down; }

    RelayHost& host_;
    Ending& ending_;
    RelayCounters& counters_;
    crypto::KernelRecordPath& path_;
    io::PipePool& pool_;
    const bool up_;
    const int src_, dst_;
    PipeDirection* reverse_ = nullptr;
    io::Pipe pipe_;
    size_t in_pipe_ = 0;
    io::PipeSpill spill_;  // client → backend bytes that reached user space, not yet in the pipe
    io::InFlight<std::monostate> readable_, writable_;  // readiness, holding nothing
    uint64_t key_updates_seen_ = 0;
    bool input_ended_ = false;
    bool done_ = false;
    bool kicking_ = false, kick_again_ = false;
};

}  // namespace ztp::conn::core
