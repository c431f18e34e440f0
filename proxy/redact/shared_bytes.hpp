// SharedBytes: the source of a rewrite plan. A read-only, reference-counted span of plaintext that
// the proxy must never modify, whichever record path produced it:
//   userspace  io::VerifiedBytes into the gated pool's read-only release view (the slot stays
//              alive while any slice of it does);
//   kernel / openssl  a plain buffer, kept alive by a shared_ptr owner (adopt()).
// Slicing never copies. A plan that points into a chunk holds a SharedBytes for it, so the buffer
// cannot be recycled (or, for the gated pool, re-gated) before the send that reads it completes.
//
// THREADS: like VerifiedBytes, a SharedBytes holding one belongs to the worker thread of its pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <variant>

#include "proxy/io/gated_pool.hpp"

namespace ztp::redact {

class SharedBytes {
public:
    SharedBytes() = default;
    // Copies share the source (a shared_ptr copy, or VerifiedBytes::share()): never the bytes.
    SharedBytes(const SharedBytes& o) : src_(o.shared_source()) {}
    SharedBytes& operator=(const SharedBytes& o) {
        if (this != &o) src_ = o.shared_source();
        return *this;
    }
    SharedBytes(SharedBytes&&) noexcept = default;
    SharedBytes& operator=(SharedBytes&&) noexcept = default;
    // Verified plaintext from the userspace record path.
    explicit SharedBytes(io::VerifiedBytes v) : src_(std::move(v)) {}
    // A buffer of the kernel or OpenSSL path: `data` stays valid while `owner` lives. The caller
    // promises not to write to it while any SharedBytes refers to it.
    static SharedBytes adopt(std::shared_ptr<const void> owner, std::span<const uint8_t> data);
    // A private copy (tests, small control-plane inputs). Never used on the data path.
    static SharedBytes copy_of(std::span<const uint8_t> data);
    static SharedBytes copy_of(std::string_view s) {
        return copy_of(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
    }

    std::span<const uint8_t> bytes() const;
    const uint8_t* data() const { return bytes().data(); }
    size_t size() const { return bytes().size(); }
    bool empty() const { return size() == 0; }

    // A sub-range sharing the same owner; clamped to this range (out of range → empty).
    SharedBytes slice(size_t offset, size_t len) const;

    // Both keep the same buffer alive (one gated slot, or one owner): holding one of them is
    // enough to keep the other's bytes valid.
    bool same_owner(const SharedBytes& o) const;

private:
    struct Owned {
        std::shared_ptr<const uint8_t> data;  // aliasing pointer: owner's refcount, chunk's address
        size_t size;  // no initializer: the variant value-initializes it (nested NSDMI quirk)
    };
    using Source = std::variant<Owned, io::VerifiedBytes>;
    Source shared_source() const;
    Source src_;
};

}  // namespace ztp::redact
