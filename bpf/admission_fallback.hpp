// Admission in user space, for hosts where the BPF program cannot load (no CAP_BPF, lockdown,
// seccomp): ztproxy starts anyway, logs once, and calls admit() right after accept, closing the
// connection when it returns false. Same semantics as bpf/admission.bpf.c (deny wins, empty allow
// admits all, GCRA per source prefix over a bounded LRU table keyed by ztp_rate_key exactly as the
// program keys it, IPv4 = IPv4-mapped IPv6, a peer that is not IP refused as unparsed), with
// two differences: the client did complete its TCP handshake, and only accepted connections count
// (the kernel counts every SYN, retransmissions included).
//
// Thread-safe (one mutex): one instance per listener, shared by its workers, so the per-source rate
// holds across workers.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <list>
#include <mutex>
#include <unordered_map>

#include "bpf/admission_policy.hpp"
#include "bpf/ztp_bpf_shared.h"
#include "proxy/base/socket_address.hpp"

namespace ztp::bpf {

class AdmissionFallback {
public:
    using Counters = AdmissionCounters;
    static constexpr size_t kRateEntries = 65536;  // as ZTP_ADMISSION_RATE_ENTRIES

    // `policy` must pass check_policy() (the config validator guarantees it).
    explicit AdmissionFallback(const AdmissionPolicy& policy, size_t rate_entries = kRateEntries);

    bool admit(const SocketAddress& peer, std::chrono::steady_clock::time_point now);
    void update(const AdmissionPolicy& policy);  // keeps rate state; resets per-deny-rule counts
    Counters counters() const;

private:
    using Addr = std::array<uint8_t, 16>;
    struct AddrHash {
        size_t operator()(const Addr& a) const noexcept;
    };
    struct Bucket {
        int64_t tat_ns;                 // theoretical arrival time (steady clock, ns)
        std::list<Addr>::iterator lru;  // position in lru_ (front = most recent)
    };

    bool rate_ok(const Addr& a, int64_t now_ns);

    mutable std::mutex mu_;
    AdmissionPolicy policy_;
    int64_t interval_ns_ = 0;
    int64_t tolerance_ns_ = 0;
    ztp_admission_config keying_{};  // only the rate masks are used: the same input ztp_rate_key gets in the kernel
    size_t capacity_;
    std::list<Addr> lru_;
    std::unordered_map<Addr, Bucket, AddrHash> buckets_;
    Counters counters_;
};

}  // namespace ztp::bpf
