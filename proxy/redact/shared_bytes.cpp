#include "proxy/redact/shared_bytes.hpp"

#include <algorithm>
#include <cstring>

namespace ztp::redact {

SharedBytes SharedBytes::adopt(std::shared_ptr<const void> owner, std::span<const uint8_t> data) {
    SharedBytes b;
    b.src_ = Owned{std::shared_ptr<const uint8_t>(std::move(owner), data.data()), data.size()};
    return b;
}

SharedBytes SharedBytes::copy_of(std::span<const uint8_t> data) {
    std::shared_ptr<uint8_t[]> buf(new uint8_t[data.empty() ? 1 : data.size()]);
    if (!data.empty()) std::memcpy(buf.get(), data.data(), data.size());
    return adopt(std::shared_ptr<const void>(buf, buf.get()), {buf.get(), data.size()});
}

std::span<const uint8_t> SharedBytes::bytes() const {
    if (const auto* v = std::get_if<io::VerifiedBytes>(&src_)) return v->bytes();
    const auto& o = std::get<Owned>(src_);
    return {o.data.get(), o.size};
}

SharedBytes::Source SharedBytes::shared_source() const {
    if (const auto* v = std::get_if<io::VerifiedBytes>(&src_)) return v->share();
    return std::get<Owned>(src_);
}

SharedBytes SharedBytes::slice(size_t offset, size_t len) const {
    SharedBytes out;
    if (const auto* v = std::get_if<io::VerifiedBytes>(&src_)) {
        out.src_ = v->slice(offset, len);
        return out;
    }
    const auto& o = std::get<Owned>(src_);
    if (offset >= o.size) return out;
    len = std::min(len, o.size - offset);
    out.src_ = Owned{std::shared_ptr<const uint8_t>(o.data, o.data.get() + offset), len};
    return out;
}

bool SharedBytes::same_owner(const SharedBytes& o) const {
    const auto* a = std::get_if<io::VerifiedBytes>(&src_);
    const auto* b = std::get_if<io::VerifiedBytes>(&o.src_);
    if (a || b) return a && b && a->same_slot(*b);
    // One control block: owner_before() orders by it, not by the aliased address.
    const auto& x = std::get<Owned>(src_).data;
    const auto& y = std::get<Owned>(o.src_).data;
    return x && y && !x.owner_before(y) && !y.owner_before(x);
}

}  // namespace ztp::redact
