// detail::RecordAead: one direction's AEAD state for crypto/record_layer (see record_layer.hpp).
// One EVP_CIPHER_CTX per direction: cipher and key are installed once (and again on KeyUpdate); each
// record only sets its nonce, so the per-record path does not allocate.
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstring>

#include "crypto/tls_wire.hpp"
#include "crypto/ktls_sockopt.hpp"
#include "crypto/record_layer.hpp"

namespace ztp::crypto::detail {

namespace {

using wire::evp_cipher;


bool valid_cipher(config::Cipher c) {
    return c == config::Cipher::aes_128_gcm || c == config::Cipher::aes_256_gcm ||
           c == config::Cipher::chacha20_poly1305;
}

}  // namespace

Result<RecordAead> RecordAead::create(DirectionKeys keys, SecretBytes tls13_traffic_secret, bool encrypt) {
    if (!valid_cipher(keys.cipher) ||
        (keys.version != config::TlsVersion::tls1_2 && keys.version != config::TlsVersion::tls1_3))
        return make_error(ENOTSUP, "record layer: unsupported version or cipher");
    RecordAead a;
    a.version_ = keys.version;
    a.cipher_ = keys.cipher;
    a.encrypt_ = encrypt;
    a.seq = keys.seq;
    // Sizes are checked, never trusted: a key of the wrong length would make EVP read past it, and a
    // wrong IV layout would silently produce records nobody can open (or, worse, reuse nonces).
    const size_t iv_size = a.explicit_nonce() ? kKtlsTls12GcmSaltSize : kKtlsIvSize;
    if (keys.key.size() != ktls_key_size(keys.cipher) || keys.iv.size() != iv_size)
        return make_error(EINVAL, "record layer: key or IV size does not match the suite");
    if (a.tls13()) {
        if (!tls13_traffic_secret.empty() && tls13_traffic_secret.size() != tls13_hash_size(keys.cipher))
            return make_error(EINVAL, "record layer: traffic secret size does not match the suite");
    } else if (!tls13_traffic_secret.empty()) {
        return make_error(EINVAL, "record layer: TLS 1.2 has no traffic secret");
    }
    a.ctx_.reset(EVP_CIPHER_CTX_new());
    if (!a.ctx_) return make_error(ENOMEM, "record layer: EVP_CIPHER_CTX_new");
    if (EVP_CipherInit_ex(a.ctx_.get(), evp_cipher(keys.cipher), nullptr, nullptr, nullptr, encrypt ? 1 : 0) != 1 ||
        EVP_CIPHER_CTX_ctrl(a.ctx_.get(), EVP_CTRL_AEAD_SET_IVLEN, 12, nullptr) != 1)
        return make_error(EPROTO, "record layer: EVP cipher setup failed");
    if (auto r = a.install_key(keys.key.view()); !r) return r.error();
    // The record key now lives only inside the EVP context (which scrubs it when freed); the copy
    // in `keys` is scrubbed by SecretBytes when `keys` goes out of scope.
    a.iv_ = std::move(keys.iv);
    a.secret_ = std::move(tls13_traffic_secret);
    return a;
}

Result<void> RecordAead::install_key(std::span<const uint8_t> key) {
    if (EVP_CipherInit_ex(ctx_.get(), nullptr, nullptr, key.data(), nullptr, encrypt_ ? 1 : 0) != 1)
        return make_error(EPROTO, "record layer: EVP key setup failed");
    return ok_result();
}

std::array<uint8_t, 12> RecordAead::nonce(const uint8_t* explicit8) const {
    std::array<uint8_t, 12> n{};
    const auto iv = iv_.view();
    if (explicit_nonce()) {
        // RFC 5288 §3: salt (4 implicit bytes from the key block) || 8-byte explicit nonce.
        std::memcpy(n.data(), iv.data(), 4);
        std::memcpy(n.data() + 4, explicit8, 8);
        return n;
    }
    // RFC 8446 §5.3 / RFC 7905 §2: the 64-bit sequence number, big-endian, left-padded to 12 bytes,
    // XORed with the write IV.
    std::memcpy(n.data(), iv.data(), 12);
    for (size_t i = 0; i < 8; ++i) n[4 + i] ^= static_cast<uint8_t>(seq >> (8 * (7 - i)));
    return n;
}

bool RecordAead::seal(const std::array<uint8_t, 12>& nonce, std::span<const uint8_t> aad,
                      std::span<uint8_t> data, uint8_t* tag) {
    EVP_CIPHER_CTX* c = ctx_.get();
    int len = 0;
    // Setting the IV resets the AEAD state (AAD, counters) for a new message under the same key.
    if (EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, nonce.data()) != 1) return false;
    if (EVP_EncryptUpdate(c, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1) return false;
    if (!data.empty()) {
        // In place (same in and out pointer) is supported by the GCM and ChaCha20-Poly1305 providers.
        if (EVP_EncryptUpdate(c, data.data(), &len, data.data(), static_cast<int>(data.size())) != 1 ||
            static_cast<size_t>(len) != data.size())
            return false;
    }
    uint8_t none[16];
    if (EVP_EncryptFinal_ex(c, none, &len) != 1 || len != 0) return false;
    return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kRecordTagSize), tag) == 1;
}

bool RecordAead::open(const std::array<uint8_t, 12>& nonce, std::span<const uint8_t> aad, std::span<uint8_t> data,
                      const uint8_t* tag) {
    EVP_CIPHER_CTX* c = ctx_.get();
    int len = 0;
    if (EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, nonce.data()) != 1) return false;
    if (EVP_DecryptUpdate(c, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1) return false;
    if (!data.empty()) {
        if (EVP_DecryptUpdate(c, data.data(), &len, data.data(), static_cast<int>(data.size())) != 1 ||
            static_cast<size_t>(len) != data.size())
            return false;
    }
    // EVP copies the tag into the context, so the record's tag bytes are only read.
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kRecordTagSize), const_cast<uint8_t*>(tag)) != 1)
        return false;
    uint8_t none[16];
    // Constant-time tag comparison inside OpenSSL; <= 0 means the tag did not verify.
    return EVP_DecryptFinal_ex(c, none, &len) == 1 && len == 0;
}

Result<void> RecordAead::rekey() {
    if (!usable()) return make_error(ENOTRECOVERABLE, "record layer: poisoned");
    if (!tls13()) return make_error(ENOTSUP, "record layer: TLS 1.2 has no KeyUpdate");
    if (secret_.empty()) {
        // A KeyUpdate we cannot follow: every later record would be under a key we do not have.
        poisoned_ = true;
        return make_error(ENOKEY, "record layer: no traffic secret to update");
    }
    auto next = tls13_next_traffic_secret(cipher_, secret_.view());
    auto keys = next ? tls13_traffic_keys(cipher_, next->view()) : Result<DirectionKeys>(next.error());
    Result<void> installed = keys ? install_key(keys->key.view()) : Result<void>(keys.error());
    if (!installed) {
        // Half a key change is worse than none: the peer has moved on (or we told it we did), so
        // neither the old nor a partially installed key may protect another record.
        poisoned_ = true;
        return make_error(installed.error().code ? installed.error().code : EPROTO,
                          "record layer: KeyUpdate key derivation failed");
    }
    iv_ = std::move(keys->iv);
    secret_ = std::move(*next);  // the previous secret is scrubbed by the move assignment
    seq = 0;
    return ok_result();
}

}  // namespace ztp::crypto::detail
