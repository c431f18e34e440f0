// What a client's record stream did, counted and logged the same way by every relay that reads it
// through a record path (the relay core's Ending, the splice relay; the userspace relay counts at its
// own decision points), so that a route's choice of relay never changes what the metrics say.
#pragma once

#include <cstdint>

#include "crypto/record_path.hpp"

namespace ztp::conn {

// A relay is ending its connection with the access log's `close_reason`. Client-caused endings
// with a dedicated counter are counted here: bad_record → ztproxy_bad_records_total,
// malformed_record / record_overflow → ztproxy_malformed_records_total,
// key_update_unsupported → ztproxy_ktls_key_update_closes_total plus an operator log line (at
// most one per 10 s per worker: clients must not be able to flood the log).
void note_relay_close(const char* close_reason);

// The connection ends early (drain deadline, idle timeout) with bytes still queued towards the
// client: it closes without close_notify, so the client can tell the stream was cut, and this is
// counted (ztproxy_truncated_closes_total).
void note_truncated_close();

// Client KeyUpdates `path` followed since `seen` → ztproxy_key_updates_total; `seen` catches up.
void note_key_updates(const crypto::RecordPath& path, uint64_t& seen);

}  // namespace ztp::conn
