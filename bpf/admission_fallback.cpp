#include "bpf/admission_fallback.hpp"

namespace ztp::bpf {

size_t AdmissionFallback::AddrHash::operator()(const Addr& a) const noexcept {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (uint8_t b : a) h = (h ^ b) * 1099511628211ull;
    return static_cast<size_t>(h);
}

AdmissionFallback::AdmissionFallback(const AdmissionPolicy& policy, size_t rate_entries)
    : capacity_(rate_entries == 0 ? 1 : rate_entries) {
    update(policy);
}

void AdmissionFallback::update(const AdmissionPolicy& p) {
    std::lock_guard lock(mu_);
    if (p.deny != policy_.deny) counters_.per_deny_rule.assign(p.deny.size(), 0);
    policy_ = p;
    // Integer nanoseconds, exactly as the kernel side computes them.
    interval_ns_ = p.rate_per_second ? static_cast<int64_t>(1'000'000'000ull / p.rate_per_second) : 0;
    tolerance_ns_ = p.burst ? (static_cast<int64_t>(p.burst) - 1) * interval_ns_ : 0;
    // The masks as Admission::write_config() sets them. A prefix change keeps the buckets keyed
    // the old way (as the kernel's LRU table does): they are no longer found and age out.
    ztp_set_rate_prefixes(&keying_, p.ipv6_rate_prefix, p.ipv4_rate_prefix);
}

bool AdmissionFallback::rate_ok(const Addr& a, int64_t now) {
    auto it = buckets_.find(a);
    if (it == buckets_.end()) {
        if (buckets_.size() >= capacity_) {  // evict the least recently seen source, like LRU_HASH
            buckets_.erase(lru_.back());
            lru_.pop_back();
        }
        lru_.push_front(a);
        buckets_.emplace(a, Bucket{now + interval_ns_, lru_.begin()});
        return true;
    }
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    const int64_t t = std::max(it->second.tat_ns, now);
    if (t - now > tolerance_ns_) return false;  // refused arrivals do not move the TAT
    it->second.tat_ns = t + interval_ns_;
    return true;
}

bool AdmissionFallback::admit(const SocketAddress& peer, std::chrono::steady_clock::time_point now) {
    auto addr = mapped_address(peer);
    std::lock_guard lock(mu_);
    if (!addr) {  // not IP: nothing the rules can judge, so refused (fail closed, as the kernel side)
        ++counters_.unparsed;
        return false;
    }
    // Longest matching deny prefix gets the count; among equal ones the last, as the LPM trie does.
    int best = -1;
    for (size_t i = 0; i < policy_.deny.size(); ++i)
        if (policy_.deny[i].contains_mapped(*addr) &&
            (best < 0 || policy_.deny[i].mapped_prefix() >= policy_.deny[best].mapped_prefix()))
            best = static_cast<int>(i);
    if (best >= 0) {
        ++counters_.denied;
        if (static_cast<size_t>(best) < counters_.per_deny_rule.size()) ++counters_.per_deny_rule[best];
        return false;
    }
    if (!policy_.allow.empty()) {
        bool in = false;
        for (const Cidr& c : policy_.allow) in = in || c.contains_mapped(*addr);
        if (!in) {
            ++counters_.not_allowed;
            return false;
        }
    }
    if (interval_ns_ != 0) {
        const int64_t ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
        Addr key;
        ztp_rate_key(addr->data(), &keying_, key.data());
        if (!rate_ok(key, ns)) {
            ++counters_.rate_limited;
            return false;
        }
    }
    ++counters_.admitted;
    return true;
}

AdmissionCounters AdmissionFallback::counters() const {
    std::lock_guard lock(mu_);
    return counters_;
}

}  // namespace ztp::bpf
