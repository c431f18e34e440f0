// Per-source connection limit ([limits] max_connections_per_source): how many connections one
// client address may hold open at once, across every worker and listener. A client that opens
// connections and leaves them hanging (slowloris, a stuck pool) exhausts its own share, not the
// process's max_connections.
//
// THREADS: any worker; the table is split into shards, each with its own mutex, so workers
// accepting from different clients rarely contend. IPv4 and IPv4-mapped IPv6 peers are one
// address.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "proxy/base/socket_address.hpp"

namespace ztp::conn {

class SourceLimit {
public:
    using Addr = std::array<uint8_t, 16>;

    // A held place: released when destroyed (the connection's lifetime).
    class Slot {
    public:
        Slot() = default;
        Slot(Slot&& o) noexcept : owner_(o.owner_), addr_(o.addr_) { o.owner_ = nullptr; }
        Slot& operator=(Slot&& o) noexcept;
        ~Slot() { release(); }
        explicit operator bool() const { return owner_ != nullptr; }

    private:
        friend class SourceLimit;
        Slot(SourceLimit* owner, const Addr& a) : owner_(owner), addr_(a) {}
        void release();
        SourceLimit* owner_ = nullptr;
        Addr addr_{};
    };

    static SourceLimit& process();

    // A place for one more connection from `peer`, or an empty Slot when it already holds `limit`.
    // limit 0 = no limit (nothing is tracked: admitted, with an empty Slot).
    struct Acquired {
        bool admitted;
        Slot slot;
    };
    Acquired acquire(const SocketAddress& peer, uint32_t limit);

    uint32_t held(const SocketAddress& peer);  // for tests and logs
    size_t tracked_sources();                  // addresses with at least one connection

    static Addr key(const SocketAddress& peer);  // IPv4 as IPv4-mapped IPv6

private:
    struct AddrHash {
        size_t operator()(const Addr& a) const noexcept;
    };
    struct Shard {
        std::mutex mu;
        std::unordered_map<Addr, uint32_t, AddrHash> counts;
    };
    static constexpr size_t kShards = 16;

    Shard& shard(const Addr& a);
    void release(const Addr& a);

    std::array<Shard, kShards> shards_;
};

}  // namespace ztp::conn
