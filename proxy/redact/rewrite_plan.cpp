#include "proxy/redact/rewrite_plan.hpp"

#include <algorithm>

namespace ztp::redact {

void RewritePlan::add_source(SharedBytes s) {
    if (s.empty()) return;
    auto b = s.bytes();
    // The same chunk continuing where the last segment ended: one iovec instead of two.
    bool merged = false;
    if (last_ == Kind::source) {
        iovec& last = iov_.back();
        if (static_cast<const uint8_t*>(last.iov_base) + last.iov_len == b.data()) {
            last.iov_len += b.size();
            merged = true;
        }
    }
    if (!merged) {
        iov_.push_back(iovec{const_cast<uint8_t*>(b.data()), b.size()});
        last_ = Kind::source;
    }
    bytes_ += b.size();
    source_bytes_ += b.size();
    // One reference per buffer, not per piece: a flood of 1-byte records into one chunk (or one
    // gated slot) would otherwise cost a reference per byte until the plan is sent. References
    // are only dropped all at once (clear()), so the first one keeps the buffer alive for all.
    if (refs_.empty() || !refs_.back().same_owner(s)) refs_.push_back(std::move(s));
}

void RewritePlan::add_static(const char* p, size_t n) {
    if (n == 0) return;
    iov_.push_back(iovec{const_cast<char*>(p), n});
    last_ = Kind::fixed;
    bytes_ += n;
    replacement_bytes_ += n;
}

void RewritePlan::add_owned(std::string_view bytes) {
    if (bytes.empty()) return;
    if (last_ == Kind::owned && owned_resolved_ < owned_idx_.size()) {
        iov_.back().iov_len += bytes.size();  // still an offset: contiguous in owned_
    } else {
        owned_idx_.push_back(iov_.size());
        iov_.push_back(iovec{reinterpret_cast<void*>(owned_.size()), bytes.size()});
        last_ = Kind::owned;
    }
    owned_.append(bytes);
    bytes_ += bytes.size();
    replacement_bytes_ += bytes.size();
}

void RewritePlan::finalize() {
    char* base = owned_.data();
    if (base != owned_base_) {
        for (size_t k = 0; k < owned_resolved_; ++k) {
            iovec& v = iov_[owned_idx_[k]];
            v.iov_base = base + (static_cast<const char*>(v.iov_base) - owned_base_);
        }
    }
    for (size_t k = owned_resolved_; k < owned_idx_.size(); ++k) {
        iovec& v = iov_[owned_idx_[k]];
        v.iov_base = base + reinterpret_cast<uintptr_t>(v.iov_base);
    }
    owned_resolved_ = owned_idx_.size();
    owned_base_ = base;
}

RewritePlan& RewritePlan::operator=(RewritePlan&& o) noexcept {
    if (this == &o) return *this;
    iov_ = std::move(o.iov_);
    owned_idx_ = std::move(o.owned_idx_);
    owned_resolved_ = o.owned_resolved_;
    owned_base_ = o.owned_base_;
    last_ = o.last_;
    refs_ = std::move(o.refs_);
    owned_ = std::move(o.owned_);
    first_ = o.first_;
    bytes_ = o.bytes_;
    source_bytes_ = o.source_bytes_;
    replacement_bytes_ = o.replacement_bytes_;
    finalize();  // owned_ may live at a new address now
    o.clear();
    return *this;
}

void RewritePlan::swap(RewritePlan& o) noexcept {
    if (this == &o) return;
    using std::swap;
    swap(iov_, o.iov_);
    swap(owned_idx_, o.owned_idx_);
    swap(owned_resolved_, o.owned_resolved_);
    swap(owned_base_, o.owned_base_);
    swap(last_, o.last_);
    swap(refs_, o.refs_);
    swap(owned_, o.owned_);
    swap(first_, o.first_);
    swap(bytes_, o.bytes_);
    swap(source_bytes_, o.source_bytes_);
    swap(replacement_bytes_, o.replacement_bytes_);
    // A short owned_ keeps its bytes inside the object: they changed address with the swap.
    finalize();
    o.finalize();
}

void RewritePlan::consume(size_t n) {
    n = std::min(n, bytes_);
    bytes_ -= n;
    while (n > 0 && first_ < iov_.size()) {
        iovec& v = iov_[first_];
        size_t k = std::min(n, v.iov_len);
        v.iov_base = static_cast<char*>(v.iov_base) + k;
        v.iov_len -= k;
        n -= k;
        if (v.iov_len == 0) ++first_;
    }
}

void RewritePlan::clear() {
    iov_.clear();
    owned_idx_.clear();
    owned_resolved_ = 0;
    owned_base_ = nullptr;
    last_ = Kind::none;
    refs_.clear();
    owned_.clear();
    first_ = bytes_ = source_bytes_ = replacement_bytes_ = 0;
}

std::string RewritePlan::to_string() const {
    std::string s;
    s.reserve(bytes_);
    for (const iovec& v : iovecs()) s.append(static_cast<const char*>(v.iov_base), v.iov_len);
    return s;
}

}  // namespace ztp::redact
