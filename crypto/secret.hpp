// SecretBytes: the one container for key material (traffic secrets, master secrets, record keys and
// IVs). Fixed capacity so it never reallocates (a reallocation would leave an unscrubbed copy on the
// heap), move-only so there is exactly one live copy, scrubbed with OPENSSL_cleanse on destruction,
// reset() and when moved from.
//
// Deliberately NOT printable: no operator<<, no fmt::formatter, no begin()/end() (fmt/ranges would
// print a range), no implicit conversion to a span or string. A log line can therefore never contain a
// key by accident; tests assert !fmt::is_formattable<SecretBytes>. Do not add any of these.
#pragma once

#include <openssl/crypto.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace ztp::crypto {

class SecretBytes {
public:
    // Largest thing we keep: a SHA-384 secret is 48 bytes, the TLS 1.2 master secret 48.
    static constexpr size_t kCapacity = 64;

    SecretBytes() = default;
    ~SecretBytes() { reset(); }

    SecretBytes(const SecretBytes&) = delete;
    SecretBytes& operator=(const SecretBytes&) = delete;

    // Moving hands the bytes over and scrubs the source, so a moved-from object holds nothing.
    SecretBytes(SecretBytes&& other) noexcept { take(other); }
    SecretBytes& operator=(SecretBytes&& other) noexcept {
        if (this != &other) {
            reset();
            take(other);
        }
        return *this;
    }

    // Copies `bytes` in. False (and empty) if they do not fit.
    [[nodiscard]] bool assign(std::span<const uint8_t> bytes) {
        reset();
        if (bytes.size() > kCapacity) return false;
        if (!bytes.empty()) std::memcpy(buf_.data(), bytes.data(), bytes.size());
        size_ = bytes.size();
        return true;
    }

    // Makes the buffer `n` bytes long (zero-filled) and returns it for a KDF to write into. Empty span
    // (and size 0) if n exceeds the capacity.
    [[nodiscard]] std::span<uint8_t> writable(size_t n) {
        reset();
        if (n > kCapacity) return {};
        size_ = n;
        return {buf_.data(), n};
    }

    std::span<const uint8_t> view() const { return {buf_.data(), size_}; }
    size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }

    // Constant-time comparison (length is not secret): for checks like "the client random in the keylog
    // line is this connection's", and for tests.
    bool equals(std::span<const uint8_t> other) const {
        return other.size() == size_ && (size_ == 0 || CRYPTO_memcmp(buf_.data(), other.data(), size_) == 0);
    }

    void reset() {
        OPENSSL_cleanse(buf_.data(), buf_.size());
        size_ = 0;
    }

private:
    void take(SecretBytes& other) {
        std::memcpy(buf_.data(), other.buf_.data(), other.size_);
        size_ = other.size_;
        other.reset();
    }

    std::array<uint8_t, kCapacity> buf_{};
    size_t size_ = 0;
};

}  // namespace ztp::crypto
