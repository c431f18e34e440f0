#include "crypto/key_schedule.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <array>
#include <cstring>
#include <memory>

#include "crypto/ktls_sockopt.hpp"
#include "proxy/base/c_deleters.hpp"

namespace ztp::crypto {

namespace {

using KdfPtr = std::unique_ptr<EVP_KDF, CDeleter<EVP_KDF_free>>;
using KdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, CDeleter<EVP_KDF_CTX_free>>;

constexpr std::string_view kTls13LabelPrefix = "tls13 ";
constexpr size_t kTls12MasterSecretSize = 48;  // RFC 5246 §8.1: always 48 bytes (EMS too, RFC 7627)
constexpr size_t kRandomSize = 32;

// Runs one EVP_KDF derivation into `out`. The KDF object is fetched per call: OpenSSL caches fetched
// implementations, and keeping no process-wide state keeps this thread-safe without locks.
Result<void> kdf_derive(const char* name, const OSSL_PARAM* params, std::span<uint8_t> out,
                        const char* what) {
    KdfPtr kdf(EVP_KDF_fetch(nullptr, name, nullptr));
    if (!kdf) return make_error(ENOTSUP, what);
    KdfCtxPtr ctx(EVP_KDF_CTX_new(kdf.get()));
    if (!ctx) return make_error(ENOMEM, what);
    if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) {
        // Never hand out a half-written key.
        OPENSSL_cleanse(out.data(), out.size());
        return make_error(EPROTO, what);
    }
    return ok_result();
}

}  // namespace

const EVP_MD* tls13_hash(config::Cipher cipher) {
    return cipher == config::Cipher::aes_256_gcm ? EVP_sha384() : EVP_sha256();
}

size_t tls13_hash_size(config::Cipher cipher) { return cipher == config::Cipher::aes_256_gcm ? 48 : 32; }

Result<SecretBytes> hkdf_expand_label(const EVP_MD* md, std::span<const uint8_t> secret,
                                      std::string_view label, std::span<const uint8_t> context,
                                      size_t length) {
    if (md == nullptr || secret.empty()) return make_error(EINVAL, "hkdf_expand_label: no hash or secret");
    // HkdfLabel's fields are one-byte length-prefixed opaque<7..255> / <0..255>; the output length is a
    // uint16 and RFC 5869 caps it at 255 * HashLen. We never need more than SecretBytes holds.
    const size_t full_label = kTls13LabelPrefix.size() + label.size();
    if (full_label > 255 || context.size() > 255)
        return make_error(EINVAL, "hkdf_expand_label: label or context too long");
    if (length == 0 || length > SecretBytes::kCapacity)
        return make_error(EINVAL, "hkdf_expand_label: output length");

    // struct { uint16 length; opaque label<7..255>; opaque context<0..255>; } HkdfLabel;
    // Label and context are public (the context is a transcript hash), so this buffer needs no scrub.
    std::array<uint8_t, 2 + 1 + 255 + 1 + 255> info{};
    size_t n = 0;
    info[n++] = static_cast<uint8_t>(length >> 8);
    info[n++] = static_cast<uint8_t>(length & 0xff);
    info[n++] = static_cast<uint8_t>(full_label);
    std::memcpy(&info[n], kTls13LabelPrefix.data(), kTls13LabelPrefix.size());
    n += kTls13LabelPrefix.size();
    if (!label.empty()) std::memcpy(&info[n], label.data(), label.size());
    n += label.size();
    info[n++] = static_cast<uint8_t>(context.size());
    if (!context.empty()) std::memcpy(&info[n], context.data(), context.size());
    n += context.size();

    // EXPAND_ONLY: `secret` already is a PRK (a traffic secret is the output of Derive-Secret).
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>(EVP_MD_get0_name(md)), 0),
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(secret.data()),
                                          secret.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), n),
        OSSL_PARAM_construct_end(),
    };
    SecretBytes out;
    auto dst = out.writable(length);
    if (auto r = kdf_derive("HKDF", params, dst, "hkdf_expand_label: HKDF failed"); !r) return r.error();
    return out;
}

Result<DirectionKeys> tls13_traffic_keys(config::Cipher cipher, std::span<const uint8_t> traffic_secret) {
    // A secret of the wrong size means it belongs to another suite's hash: deriving from it would give
    // keys that silently fail every record, so refuse here where the cause is still visible.
    if (traffic_secret.size() != tls13_hash_size(cipher))
        return make_error(EINVAL, "tls13_traffic_keys: secret size does not match the suite hash");
    const EVP_MD* md = tls13_hash(cipher);
    auto key = hkdf_expand_label(md, traffic_secret, "key", {}, ktls_key_size(cipher));
    if (!key) return key.error();
    auto iv = hkdf_expand_label(md, traffic_secret, "iv", {}, kKtlsIvSize);
    if (!iv) return iv.error();
    DirectionKeys k;
    k.version = config::TlsVersion::tls1_3;
    k.cipher = cipher;
    k.key = std::move(key).value();
    k.iv = std::move(iv).value();
    k.seq = 0;
    return k;
}

Result<SecretBytes> tls13_next_traffic_secret(config::Cipher cipher, std::span<const uint8_t> secret) {
    if (secret.size() != tls13_hash_size(cipher))
        return make_error(EINVAL, "tls13_next_traffic_secret: secret size does not match the suite hash");
    return hkdf_expand_label(tls13_hash(cipher), secret, "traffic upd", {}, tls13_hash_size(cipher));
}

Result<std::pair<DirectionKeys, DirectionKeys>> tls12_key_block(config::Cipher cipher,
                                                                std::span<const uint8_t> master_secret,
                                                                std::span<const uint8_t> client_random,
                                                                std::span<const uint8_t> server_random) {
    if (master_secret.size() != kTls12MasterSecretSize || client_random.size() != kRandomSize ||
        server_random.size() != kRandomSize)
        return make_error(EINVAL, "tls12_key_block: master secret or random size");
    const size_t key_len = ktls_key_size(cipher);
    // RFC 5288 §3: AES-GCM's fixed_iv_length is 4 (the salt); RFC 7905 §2: ChaCha20-Poly1305's is 12.
    const size_t iv_len = cipher == config::Cipher::chacha20_poly1305 ? kKtlsIvSize : kKtlsTls12GcmSaltSize;
    // RFC 5246 §5 / RFC 5288 §6.1: the PRF hash is the suite's (SHA-384 for *_AES_256_GCM_SHA384).
    const char* digest = cipher == config::Cipher::aes_256_gcm ? "SHA384" : "SHA256";

    // seed = "key expansion" || server_random || client_random (RFC 5246 §6.3: server random first,
    // unlike the master secret derivation). Randoms are public; the seed needs no scrub.
    static constexpr std::string_view kLabel = "key expansion";
    std::array<uint8_t, kLabel.size() + 2 * kRandomSize> seed{};
    std::memcpy(seed.data(), kLabel.data(), kLabel.size());
    std::memcpy(seed.data() + kLabel.size(), server_random.data(), kRandomSize);
    std::memcpy(seed.data() + kLabel.size() + kRandomSize, client_random.data(), kRandomSize);

    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>(digest), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, const_cast<uint8_t*>(master_secret.data()),
                                          master_secret.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed.data(), seed.size()),
        OSSL_PARAM_construct_end(),
    };
    // Largest block: 2 × 32-byte keys + 2 × 12-byte IVs = 88. It holds every key: scrubbed on all paths.
    std::array<uint8_t, 2 * 32 + 2 * 12> block{};
    const size_t block_len = 2 * key_len + 2 * iv_len;
    auto r = kdf_derive("TLS1-PRF", params, std::span<uint8_t>(block.data(), block_len),
                        "tls12_key_block: TLS1-PRF failed");
    if (!r) return r.error();

    const uint8_t* p = block.data();
    std::pair<DirectionKeys, DirectionKeys> out;
    auto& [client_write, server_write] = out;
    for (DirectionKeys* k : {&client_write, &server_write}) {
        k->version = config::TlsVersion::tls1_2;
        k->cipher = cipher;
        // RFC 5246 §6.2.3.3 / §7.4.9: the Finished message is the first record under the new keys, so
        // after a handshake the caller sets seq (it is 1, not 0); the key block itself starts at 0.
        k->seq = 0;
    }
    bool fits = client_write.key.assign({p, key_len}) && server_write.key.assign({p + key_len, key_len}) &&
                client_write.iv.assign({p + 2 * key_len, iv_len}) &&
                server_write.iv.assign({p + 2 * key_len + iv_len, iv_len});
    OPENSSL_cleanse(block.data(), block.size());
    if (!fits) return make_error(EINVAL, "tls12_key_block: key material does not fit");
    return out;
}

}  // namespace ztp::crypto
