#include "crypto/key_schedule.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <openssl/params.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>

#include "crypto/ktls_sockopt.hpp"
#include "proxy/base/c_deleters.hpp"

namespace ztp::crypto {

namespace {

using KdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, CDeleter<EVP_KDF_CTX_free>>;
using MacCtxPtr = std::unique_ptr<EVP_MAC_CTX, CDeleter<EVP_MAC_CTX_free>>;

constexpr std::string_view kTls13LabelPrefix = "tls13 ";
constexpr size_t kTls12MasterSecretSize = 48;  // RFC 5246 §8.1: always 48 bytes (EMS too, RFC 7627)
constexpr size_t kRandomSize = 32;

// The KDF and MAC implementations, fetched once per process. A fetch is a locked lookup in
// OpenSSL's method store, about 15,000 instructions, and a TLS 1.3 connection that leaves OpenSSL
// derives four keys (callgrind, tests/bench/handshake_profile). EVP_KDF and EVP_MAC objects are
// immutable and reference-counted, so one is shared by every thread; C++ static initialisation is
// thread-safe. Never freed: they live as long as the process, like OpenSSL's own method store.
const EVP_MAC* hmac_impl() {
    static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    return mac;
}

const EVP_KDF* tls1_prf_impl() {
    static EVP_KDF* const kdf = EVP_KDF_fetch(nullptr, "TLS1-PRF", nullptr);
    return kdf;
}

// A keyless HMAC context for `md` (SHA-256 or SHA-384, the TLS 1.3 suite hashes), one per thread,
// duplicated for each secret. Setting a digest by name fetches it again (what OpenSSL's HKDF did
// for every context: most of a derivation's cost); a duplicate copies the fetched digest. Per
// thread because OpenSSL objects are not to be shared between threads, and it holds no key.
EVP_MAC_CTX* hmac_template(const EVP_MD* md) {
    thread_local MacCtxPtr sha256, sha384;
    const int type = EVP_MD_get_type(md);
    MacCtxPtr* slot = type == NID_sha256 ? &sha256 : type == NID_sha384 ? &sha384 : nullptr;
    if (slot == nullptr || hmac_impl() == nullptr) return nullptr;
    if (!*slot) {
        MacCtxPtr ctx(EVP_MAC_CTX_new(const_cast<EVP_MAC*>(hmac_impl())));
        const OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>(EVP_MD_get0_name(md)), 0),
            OSSL_PARAM_construct_end(),
        };
        if (!ctx || EVP_MAC_CTX_set_params(ctx.get(), params) != 1) return nullptr;
        *slot = std::move(ctx);
    }
    return slot->get();
}

// Runs one EVP_KDF derivation into `out` on `ctx` (whose fixed parameters may be set already).
Result<void> kdf_derive(EVP_KDF_CTX* ctx, const OSSL_PARAM* params, std::span<uint8_t> out, const char* what) {
    if (EVP_KDF_derive(ctx, out.data(), out.size(), params) != 1) {
        // Never hand out a half-written key.
        OPENSSL_cleanse(out.data(), out.size());
        return make_error(EPROTO, what);
    }
    return ok_result();
}

KdfCtxPtr new_kdf_ctx(const EVP_KDF* kdf) {
    return KdfCtxPtr(kdf != nullptr ? EVP_KDF_CTX_new(const_cast<EVP_KDF*>(kdf)) : nullptr);
}

// HKDF-Expand-Label under one secret (RFC 8446 §7.1 over RFC 5869 §2.3 HKDF-Expand, the secret
// being the PRK: a traffic secret already is the output of Derive-Secret). The secret is keyed into
// one HMAC context once; each label then costs one HMAC per hash-length block of output (one for
// every key, IV and next secret TLS 1.3 asks for). The context holds the keyed pads; freeing it
// scrubs them, and the blocks below are scrubbed before return.
class LabelExpander {
public:
    static Result<LabelExpander> create(const EVP_MD* md, std::span<const uint8_t> secret) {
        if (md == nullptr || secret.empty()) return make_error(EINVAL, "hkdf_expand_label: no hash or secret");
        EVP_MAC_CTX* tmpl = hmac_template(md);
        if (tmpl == nullptr) return make_error(ENOTSUP, "hkdf_expand_label: no HMAC for this hash");
        LabelExpander e;
        e.ctx_.reset(EVP_MAC_CTX_dup(tmpl));
        if (!e.ctx_) return make_error(ENOMEM, "hkdf_expand_label: HMAC context");
        if (EVP_MAC_init(e.ctx_.get(), secret.data(), secret.size(), nullptr) != 1)
            return make_error(EPROTO, "hkdf_expand_label: HMAC key");
        e.hash_len_ = static_cast<size_t>(EVP_MD_get_size(md));
        return e;
    }

    Result<SecretBytes> expand(std::string_view label, std::span<const uint8_t> context, size_t length) {
        // HkdfLabel's fields are one-byte length-prefixed opaque<7..255> / <0..255>; the output length
        // is a uint16 and RFC 5869 caps it at 255 * HashLen. We never need more than SecretBytes holds.
        const size_t full_label = kTls13LabelPrefix.size() + label.size();
        if (full_label > 255 || context.size() > 255)
            return make_error(EINVAL, "hkdf_expand_label: label or context too long");
        if (length == 0 || length > SecretBytes::kCapacity) return make_error(EINVAL, "hkdf_expand_label: output length");

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

        // T(i) = HMAC(PRK, T(i-1) || info || i), T(0) empty; the output is T(1) || T(2) ... cut to
        // `length`. Blocks are derived key material: scrubbed on every path.
        SecretBytes out;
        auto dst = out.writable(length);
        std::array<uint8_t, EVP_MAX_MD_SIZE> block{};
        size_t done = 0;
        bool ok = true;
        for (uint8_t i = 1; ok && done < length; ++i) {
            const uint8_t counter[1] = {i};
            size_t got = 0;
            // A NULL key re-initialises the context with the key it already holds.
            ok = EVP_MAC_init(ctx_.get(), nullptr, 0, nullptr) == 1 &&
                 (i == 1 || EVP_MAC_update(ctx_.get(), block.data(), hash_len_) == 1) &&
                 EVP_MAC_update(ctx_.get(), info.data(), n) == 1 && EVP_MAC_update(ctx_.get(), counter, 1) == 1 &&
                 EVP_MAC_final(ctx_.get(), block.data(), &got, block.size()) == 1 && got == hash_len_;
            if (!ok) break;
            const size_t take = std::min(hash_len_, length - done);
            std::memcpy(dst.data() + done, block.data(), take);
            done += take;
        }
        OPENSSL_cleanse(block.data(), block.size());
        if (!ok) {
            // Never hand out a half-written key.
            OPENSSL_cleanse(dst.data(), dst.size());
            return make_error(EPROTO, "hkdf_expand_label: HMAC failed");
        }
        return out;
    }

private:
    LabelExpander() = default;
    MacCtxPtr ctx_;
    size_t hash_len_ = 0;
};

}  // namespace

const EVP_MD* tls13_hash(config::Cipher cipher) {
    return cipher == config::Cipher::aes_256_gcm ? EVP_sha384() : EVP_sha256();
}

size_t tls13_hash_size(config::Cipher cipher) { return cipher == config::Cipher::aes_256_gcm ? 48 : 32; }

Result<SecretBytes> hkdf_expand_label(const EVP_MD* md, std::span<const uint8_t> secret,
                                      std::string_view label, std::span<const uint8_t> context,
                                      size_t length) {
    auto expander = LabelExpander::create(md, secret);
    if (!expander) return expander.error();
    return expander->expand(label, context, length);
}

Result<DirectionKeys> tls13_traffic_keys(config::Cipher cipher, std::span<const uint8_t> traffic_secret) {
    // A secret of the wrong size means it belongs to another suite's hash: deriving from it would give
    // keys that silently fail every record, so refuse here where the cause is still visible.
    if (traffic_secret.size() != tls13_hash_size(cipher))
        return make_error(EINVAL, "tls13_traffic_keys: secret size does not match the suite hash");
    auto expander = LabelExpander::create(tls13_hash(cipher), traffic_secret);
    if (!expander) return expander.error();
    auto key = expander->expand("key", {}, ktls_key_size(cipher));
    if (!key) return key.error();
    auto iv = expander->expand("iv", {}, kKtlsIvSize);
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
    KdfCtxPtr prf = new_kdf_ctx(tls1_prf_impl());
    if (!prf) return make_error(tls1_prf_impl() ? ENOMEM : ENOTSUP, "tls12_key_block: no TLS1-PRF");
    auto r = kdf_derive(prf.get(), params, std::span<uint8_t>(block.data(), block_len),
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
