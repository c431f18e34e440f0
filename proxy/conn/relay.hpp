// Relay: moves plaintext between the client's record path and the backend socket, both ways,
// until both directions have ended. Implementations:
//   RecordPathRelay  the relay core (relay_core/direction.hpp: source → redaction stage → sink per
//                    direction, over leased chunks) for record paths that do their own socket I/O:
//                    OpenSSL, and the kernel path on rule routes;
//   UserspaceRelay   ztproxy's own record layer with page-gated plaintext;
//   SpliceRelay      kernel record path, plain routes: socket → pipe → socket with non-blocking
//                    splice(2) on readiness (relay_core/pipe_direction.hpp), so the plaintext
//                    never enters user space.
// The owning Connection submits nothing for the relay: it forwards completions whose tag is at
// least kFirstRelayTag, counts in-flight ops through RelayHost, and frees the relay only when no
// op is in flight.
#pragma once

#include <cstdint>
#include <string>

#include "proxy/io/buffer_pool.hpp"
#include "proxy/io/event_loop.hpp"
#include "proxy/io/submitter.hpp"

namespace ztp::conn {

inline constexpr uint8_t kFirstRelayTag = 16;

struct RelayCounters {
    uint64_t bytes_up = 0;     // plaintext client → backend
    uint64_t bytes_down = 0;   // plaintext backend → client
    uint64_t spliced_up = 0;   // of which moved by splice (never in user space)
    uint64_t spliced_down = 0;
    uint64_t copied_up = 0;    // of which passed through a user-space buffer
    uint64_t copied_down = 0;
};

class RelayHost {
public:
    virtual io::Submitter& loop() = 0;
    virtual io::CompletionHandler& completion_target() = 0;  // Op::handler for relay ops
    virtual io::BufferPool& buffers() = 0;                   // the worker's plaintext buffers
    virtual void op_submitted() = 0;                         // one more op in flight
    virtual void activity() = 0;                             // bytes moved: idle timer restarts
    virtual void relay_finished(const char* reason) = 0;     // both directions ended cleanly
    virtual void relay_failed(const char* reason, const std::string& detail) = 0;

protected:
    ~RelayHost() = default;
};

class Relay {
public:
    virtual ~Relay() = default;
    virtual void start() = 0;
    virtual void on_completion(uint8_t tag, int res) = 0;
    // The connection is ending for an outside reason (idle timeout, shutdown): tell the client
    // with close_notify if our direction towards it is still open. Best effort, never blocks.
    virtual void say_goodbye() = 0;
    // Cancels ops on descriptors the relay owns (its pipes); the connection cancels the sockets.
    virtual void cancel_own_io() = 0;
    virtual const RelayCounters& counters() const = 0;
    virtual const char* rx_path() const = 0;
    virtual const char* tx_path() const = 0;
};

}  // namespace ztp::conn
