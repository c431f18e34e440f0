// Process-wide counters (relaxed atomics: each is independent, read by the admin side later).
#pragma once

#include <atomic>
#include <chrono>
#include <iterator>
#include <cstdint>
#include <string_view>

#include "crypto/client_cert.hpp"
#include "crypto/handshake.hpp"
#include "crypto/kernel_record_path.hpp"

namespace ztp::conn {

// Record paths, for per-path counters: index with record_path_index().
inline constexpr const char* kRecordPaths[] = {"kernel", "userspace", "openssl"};
inline size_t record_path_index(std::string_view name) {
    for (size_t i = 0; i < 3; ++i)
        if (name == kRecordPaths[i]) return i;
    return 2;
}

// Why connections end (the access log's close=), for per-reason counters: index with
// close_reason_index(); anything not listed counts as "other".
inline constexpr const char* kCloseReasons[] = {
    "client_close",            "backend_close",           "backend_connect_failed",  "backend_connect_timeout",
    "backend_reset",           "handshake_failed",        "handshake_timeout",       "client_cert_rejected",
    "idle_timeout",            "client_reset",            "client_error",            "client_alert",
    "bad_record",              "malformed_record",        "record_overflow",         "key_update_unsupported",
    "key_update_flood",        "renegotiation_refused",   "bad_key_update",          "ktls_unavailable",
    "record_path_unavailable", "proxy_header_failed",     "no_route",                "overloaded",
    "shutdown",                "internal_error",
    "other"};
inline constexpr size_t kCloseReasonCount = sizeof(kCloseReasons) / sizeof(kCloseReasons[0]);
inline size_t close_reason_index(std::string_view reason) {
    for (size_t i = 0; i + 1 < kCloseReasonCount; ++i)
        if (reason == kCloseReasons[i]) return i;
    return kCloseReasonCount - 1;
}

struct Stats {
    std::atomic<uint64_t> connections_total{0};
    std::atomic<uint64_t> connections_closed[kCloseReasonCount]{};  // by close_reason_index()
    // Backend connect latency (successful connects), a histogram: counts per bucket upper bound.
    static constexpr double kConnectBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
    std::atomic<uint64_t> backend_connect_bucket[sizeof(kConnectBuckets) / sizeof(double) + 1]{};  // last: +Inf
    std::atomic<uint64_t> backend_connect_count{0};
    std::atomic<uint64_t> backend_connect_micros{0};  // sum
    std::atomic<int64_t> connections_active{0};
    std::atomic<uint64_t> connections_refused_limit{0};       // over max_connections
    std::atomic<uint64_t> connections_refused_per_source{0};  // over max_connections_per_source
    std::atomic<uint64_t> handshakes_ok{0};
    std::atomic<uint64_t> handshakes_failed{0};
    std::atomic<uint64_t> handshake_timeouts{0};
    std::atomic<uint64_t> handshake_failures[static_cast<size_t>(crypto::HandshakeFailure::count)]{};
    std::atomic<uint64_t> client_certs_verified{0};  // handshakes that verified a client certificate
    // Handshakes refused because of the client certificate (also counted in handshakes_failed).
    std::atomic<uint64_t> client_cert_failures[static_cast<size_t>(crypto::ClientCertFailure::count)]{};
    std::atomic<uint64_t> idle_timeouts{0};
    std::atomic<uint64_t> truncated_closes{0};  // ended early with bytes queued: no close_notify
    std::atomic<uint64_t> gated_slot_waits{0};  // a client not read for a moment: every gated slot busy
    // Splice pipes the kernel would not size to connection_buffer (F_SETPIPE_SZ refused, e.g. over
    // fs.pipe-max-size or fs.pipe-user-pages-soft): relayed at the size they had.
    std::atomic<uint64_t> pipe_resize_failures{0};
    std::atomic<uint64_t> backend_connect_failures{0};
    std::atomic<uint64_t> bytes_up{0};    // plaintext client → backend
    std::atomic<uint64_t> bytes_down{0};  // plaintext backend → client
    std::atomic<uint64_t> bytes_up_by_path[3]{};    // by the path that decrypted client → backend
    std::atomic<uint64_t> bytes_down_by_path[3]{};  // by the path that encrypted backend → client
    // Per direction like the access log's spliced_up/_down, copied_up/_down.
    std::atomic<uint64_t> spliced_bytes_up{0};  // plaintext moved by splice, never in user space
    std::atomic<uint64_t> spliced_bytes_down{0};
    std::atomic<uint64_t> copied_bytes_up{0};  // plaintext that passed through a user-space buffer
    std::atomic<uint64_t> copied_bytes_down{0};
    std::atomic<uint64_t> bad_records{0};    // records that failed authentication (never forwarded)
    // Records refused at their header (content type, version, length over the limit): never
    // decrypted, never forwarded.
    std::atomic<uint64_t> malformed_records{0};
    std::atomic<uint64_t> key_updates{0};    // client KeyUpdates followed (userspace and kernel paths)
    std::atomic<uint64_t> reloads_ok{0};
    std::atomic<uint64_t> reloads_failed{0};
    std::atomic<uint64_t> ktls_installs{0};
    std::atomic<uint64_t> ktls_key_update_closes{0};  // client KeyUpdate on a kernel that cannot rekey kTLS
    std::atomic<uint64_t> ktls_fallbacks[static_cast<size_t>(crypto::KtlsFallback::count)]{};
};

inline Stats& stats() {
    static Stats s;
    return s;
}

inline void bump(std::atomic<uint64_t>& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }

inline void observe_backend_connect(std::chrono::microseconds took) {
    Stats& s = stats();
    const double secs = static_cast<double>(took.count()) / 1e6;
    size_t i = 0;
    while (i < std::size(Stats::kConnectBuckets) && secs > Stats::kConnectBuckets[i]) ++i;
    bump(s.backend_connect_bucket[i]);
    bump(s.backend_connect_count);
    bump(s.backend_connect_micros, static_cast<uint64_t>(took.count()));
}

}  // namespace ztp::conn
