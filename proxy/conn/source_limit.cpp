#include "proxy/conn/source_limit.hpp"

#include <netinet/in.h>

#include <cstring>

namespace ztp::conn {

SourceLimit& SourceLimit::process() {
    static SourceLimit s;
    return s;
}

SourceLimit::Addr SourceLimit::key(const SocketAddress& peer) {
    Addr a{};
    if (peer.family() == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(peer.sa());
        a[10] = a[11] = 0xff;
        std::memcpy(&a[12], &in->sin_addr, 4);
    } else if (peer.family() == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(peer.sa());
        std::memcpy(a.data(), &in6->sin6_addr, 16);
    }
    return a;
}

size_t SourceLimit::AddrHash::operator()(const Addr& a) const noexcept {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (uint8_t b : a) h = (h ^ b) * 1099511628211ull;
    return static_cast<size_t>(h);
}

SourceLimit::Shard& SourceLimit::shard(const Addr& a) { return shards_[AddrHash{}(a) % kShards]; }

SourceLimit::Acquired SourceLimit::acquire(const SocketAddress& peer, uint32_t limit) {
    if (limit == 0) return {true, Slot()};
    const Addr a = key(peer);
    Shard& s = shard(a);
    std::lock_guard lock(s.mu);
    uint32_t& n = s.counts[a];
    if (n >= limit) return {false, Slot()};
    ++n;
    return {true, Slot(this, a)};
}

void SourceLimit::release(const Addr& a) {
    Shard& s = shard(a);
    std::lock_guard lock(s.mu);
    auto it = s.counts.find(a);
    if (it == s.counts.end()) return;
    if (--it->second == 0) s.counts.erase(it);  // the table holds only sources with connections
}

uint32_t SourceLimit::held(const SocketAddress& peer) {
    const Addr a = key(peer);
    Shard& s = shard(a);
    std::lock_guard lock(s.mu);
    auto it = s.counts.find(a);
    return it == s.counts.end() ? 0 : it->second;
}

size_t SourceLimit::tracked_sources() {
    size_t n = 0;
    for (Shard& s : shards_) {
        std::lock_guard lock(s.mu);
        n += s.counts.size();
    }
    return n;
}

SourceLimit::Slot& SourceLimit::Slot::operator=(Slot&& o) noexcept {
    if (this != &o) {
        release();
        owner_ = o.owner_;
        addr_ = o.addr_;
        o.owner_ = nullptr;
    }
    return *this;
}

void SourceLimit::Slot::release() {
    if (owner_) owner_->release(addr_);
    owner_ = nullptr;
}

}  // namespace ztp::conn
