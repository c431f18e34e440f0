// Wire-format helpers shared by the record layer and the kTLS probe's reference records: the
// EVP cipher for a suite, big-endian integers, and the TLS 1.2 AEAD additional data.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <cstddef>
#include <cstdint>

#include "config/policy.hpp"

namespace ztp::crypto::wire {

inline const EVP_CIPHER* evp_cipher(config::Cipher c) {
    switch (c) {
        case config::Cipher::aes_128_gcm: return EVP_aes_128_gcm();
        case config::Cipher::aes_256_gcm: return EVP_aes_256_gcm();
        case config::Cipher::chacha20_poly1305: return EVP_chacha20_poly1305();
    }
    return nullptr;
}

inline void put_be(uint8_t* out, uint64_t v, size_t n) {
    for (size_t i = n; i-- > 0;) {
        out[i] = static_cast<uint8_t>(v & 0xff);
        v >>= 8;
    }
}

// TLS 1.2 AAD (RFC 5246 §6.2.3.3): seq_num || type || version || length of the plaintext.
inline std::array<uint8_t, 13> tls12_aad(uint64_t seq, uint8_t type, size_t plaintext_len) {
    std::array<uint8_t, 13> a{};
    put_be(a.data(), seq, 8);
    a[8] = type;
    a[9] = 3;
    a[10] = 3;
    put_be(a.data() + 11, plaintext_len, 2);
    return a;
}

}  // namespace ztp::crypto::wire
