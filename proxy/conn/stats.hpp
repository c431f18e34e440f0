// Process-wide counters (relaxed atomics: each is independent, read by the admin side later).
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "crypto/client_cert.hpp"
#include "crypto/kernel_record_path.hpp"

namespace ztp::conn {

// Record paths, for per-path counters: index with record_path_index().
inline constexpr const char* kRecordPaths[] = {"kernel", "userspace", "openssl"};
inline size_t record_path_index(std::string_view name) {
    for (size_t i = 0; i < 3; ++i)
        if (name == kRecordPaths[i]) return i;
    return 2;
}

struct Stats {
    std::atomic<uint64_t> connections_total{0};
    std::atomic<int64_t> connections_active{0};
    std::atomic<uint64_t> connections_refused_limit{0};       // over max_connections
    std::atomic<uint64_t> connections_refused_per_source{0};  // over max_connections_per_source
    std::atomic<uint64_t> handshakes_ok{0};
    std::atomic<uint64_t> handshakes_failed{0};
    std::atomic<uint64_t> handshake_timeouts{0};
    std::atomic<uint64_t> client_certs_verified{0};  // handshakes that verified a client certificate
    // Handshakes refused because of the client certificate (also counted in handshakes_failed).
    std::atomic<uint64_t> client_cert_failures[static_cast<size_t>(crypto::ClientCertFailure::count)]{};
    std::atomic<uint64_t> idle_timeouts{0};
    std::atomic<uint64_t> backend_connect_failures{0};
    std::atomic<uint64_t> bytes_up{0};    // plaintext client → backend
    std::atomic<uint64_t> bytes_down{0};  // plaintext backend → client
    std::atomic<uint64_t> bytes_up_by_path[3]{};    // by the path that decrypted client → backend
    std::atomic<uint64_t> bytes_down_by_path[3]{};  // by the path that encrypted backend → client
    std::atomic<uint64_t> spliced_bytes{0};  // plaintext moved by splice, never in user space
    std::atomic<uint64_t> copied_bytes{0};   // plaintext that passed through a user-space buffer
    std::atomic<uint64_t> bad_records{0};    // records that failed authentication (never forwarded)
    std::atomic<uint64_t> key_updates{0};    // client KeyUpdates followed (userspace path)
    std::atomic<uint64_t> reloads_ok{0};
    std::atomic<uint64_t> reloads_failed{0};
    std::atomic<uint64_t> ktls_installs{0};
    std::atomic<uint64_t> ktls_key_update_closes{0};  // client KeyUpdate on a kernel that cannot rekey
    std::atomic<uint64_t> ktls_fallbacks[static_cast<size_t>(crypto::KtlsFallback::count)]{};
};

inline Stats& stats() {
    static Stats s;
    return s;
}

inline void bump(std::atomic<uint64_t>& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }

}  // namespace ztp::conn
