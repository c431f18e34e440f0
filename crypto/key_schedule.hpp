// The TLS key schedules, as pure functions over byte strings (no SSL objects): from a TLS 1.3 traffic
// secret or a TLS 1.2 master secret to the per-direction record key and IV that ktls_install and
// ztproxy's own record layer take. Every secret goes in and out as a span/SecretBytes and every
// temporary is scrubbed before return.
#pragma once

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>

#include "config/policy.hpp"
#include "crypto/secret.hpp"
#include "proxy/base/result.hpp"

namespace ztp::crypto {

// One direction's record protection state, in exactly the layout ktls_install() accepts:
//   key: 16 bytes (AES-128-GCM) or 32 (AES-256-GCM, CHACHA20-POLY1305).
//   iv:  12 bytes for TLS 1.3 (all ciphers) and TLS 1.2 CHACHA20-POLY1305 (RFC 7905: XORed with the
//        sequence number); 4 bytes for TLS 1.2 AES-GCM (RFC 5288 salt; the 8-byte explicit nonce
//        travels in each record).
//   seq: sequence number of the NEXT record in this direction under this key.
struct DirectionKeys {
    config::TlsVersion version = config::TlsVersion::tls1_3;
    config::Cipher cipher = config::Cipher::aes_128_gcm;
    SecretBytes key;
    SecretBytes iv;
    uint64_t seq = 0;
};

// The TLS 1.3 suite hash: SHA-384 for TLS_AES_256_GCM_SHA384, SHA-256 for the other two.
const EVP_MD* tls13_hash(config::Cipher cipher);
size_t tls13_hash_size(config::Cipher cipher);  // 32 or 48: the size of every traffic secret

// RFC 8446 §7.1 HKDF-Expand-Label(secret, label, context, length) with HkdfLabel.label = "tls13 " +
// `label` (pass the label WITHOUT the "tls13 " prefix). `length` ≤ SecretBytes::kCapacity.
Result<SecretBytes> hkdf_expand_label(const EVP_MD* md, std::span<const uint8_t> secret,
                                      std::string_view label, std::span<const uint8_t> context,
                                      size_t length);

// RFC 8446 §7.3: key = HKDF-Expand-Label(secret, "key", "", key_len), iv = ...("iv", "", 12).
// `traffic_secret` must be tls13_hash_size(cipher) bytes. The result has seq 0.
Result<DirectionKeys> tls13_traffic_keys(config::Cipher cipher, std::span<const uint8_t> traffic_secret);

// RFC 8446 §7.2 (KeyUpdate): application_traffic_secret_N+1 =
//   HKDF-Expand-Label(application_traffic_secret_N, "traffic upd", "", Hash.length).
Result<SecretBytes> tls13_next_traffic_secret(config::Cipher cipher, std::span<const uint8_t> secret);

// TLS 1.2 AEAD suites (RFC 5246 §6.3, RFC 5288, RFC 7905): key_block = PRF(master_secret,
// "key expansion", server_random + client_random), PRF hash SHA-384 for the AES-256-GCM suites and
// SHA-256 otherwise; AEAD suites have no MAC keys, so the block is
//   client_write_key | server_write_key | client_write_IV | server_write_IV.
// Returns {client_write (what a server receives), server_write (what a server sends)}, both seq 0.
// master_secret must be 48 bytes, each random 32 bytes.
Result<std::pair<DirectionKeys, DirectionKeys>> tls12_key_block(config::Cipher cipher,
                                                                std::span<const uint8_t> master_secret,
                                                                std::span<const uint8_t> client_random,
                                                                std::span<const uint8_t> server_random);

}  // namespace ztp::crypto
