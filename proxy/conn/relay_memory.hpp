// What the relays can hold, at most, in the units that cost (README "Relay memory bounds"): per
// connection from the caps each relay enforces, and for the whole process at max_connections. The
// per-connection caps are what keep one peer from growing the proxy; the process bound is that
// cap times max_connections (HAProxy's maxconn × bufsize model), plus the gated pools, which are
// fixed per worker. Worker 0 states the bound at start and warns when it exceeds the memory this
// process may use (its cgroup's memory.max, else the machine's memory), so that max_connections
// is lowered before a flood finds out.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace ztp::conn {

struct RelayMemoryInputs {
    size_t connection_buffer = 0;  // limits.connection_buffer, bytes
    size_t pool_buffer = 0;        // the worker's BufferPool buffer size (worker.cpp)
    size_t max_connections = 0;    // per process
    size_t workers = 1;
    size_t gated_bytes_per_worker = 0;  // the gated pools' slots × slot size, fixed at start
    bool rules = false;            // some route has redaction rules
};

struct RelayMemoryBound {
    size_t per_connection = 0;  // the most one connection's relay can hold, on the costliest route
    const char* costliest = "";  // which route kind that is
    size_t process = 0;         // per_connection × max_connections + every worker's gated pools
};

// Bytes one plan segment costs at most while queued: its iovec, its chunk reference and vector
// slack (redact::RewritePlan).
inline constexpr size_t kPlanSegmentBytes = 64;

RelayMemoryBound relay_memory_bound(const RelayMemoryInputs& in);

// A warning when the process bound exceeds `memory_limit` bytes (0: unknown, no warning).
std::optional<std::string> relay_memory_warning(const RelayMemoryInputs& in, const RelayMemoryBound& bound,
                                                size_t memory_limit);

// cgroup v2 memory.max of this process, else MemTotal; 0 when neither can be read.
size_t process_memory_limit();

}  // namespace ztp::conn
