// probe_ktls(): does this kernel really do TLS record crypto, per version × cipher and direction?
// It does not trust setsockopt's return value alone: each direction is checked against an
// independent user-space implementation of the record format (OpenSSL EVP), so a kernel that
// accepts a key but frames or encrypts records differently from RFC 5246/8446 is reported, and so
// is a mistake in how we fill the kernel's crypto_info (a kernel-to-kernel loopback would hide it:
// both ends would share the mistake).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "config/policy.hpp"
#include "proxy/base/result.hpp"

namespace ztp::crypto {

struct KtlsProbeEntry {
    config::TlsVersion version = config::TlsVersion::tls1_2;
    config::Cipher cipher = config::Cipher::aes_128_gcm;
    bool tx = false;    // kernel-encrypted record opened by OpenSSL
    bool rx = false;    // OpenSSL-sealed record decrypted by the kernel
    std::string error;  // why not, when !tx || !rx
};

struct KtlsProbe {
    bool ulp_available = false;
    std::string why_not;                  // set when !ulp_available
    std::vector<KtlsProbeEntry> entries;  // all 6 version × cipher combinations, 1.2 first
};

KtlsProbe probe_ktls();

// A user-space reference for single TLS records, used by the probe and the kTLS tests to
// cross-check the kernel. Not a record layer: no buffering, no fragmentation, no padding.
// `iv` has the layout ktls_install takes (12 bytes; for TLS 1.2 AES-GCM salt || explicit nonce, and
// the explicit nonce written into a sealed record is iv[4..12]).
namespace ktls_reference {

// Returns header || [explicit nonce] || ciphertext || tag. For TLS 1.3 the header says
// application_data and `type` travels encrypted as the inner content type.
Result<std::vector<uint8_t>> seal_record(config::TlsVersion version, config::Cipher cipher,
                                         std::span<const uint8_t> key, std::span<const uint8_t> iv,
                                         uint64_t seq, uint8_t type, std::span<const uint8_t> plaintext);

struct Opened {
    uint8_t type = 0;
    std::vector<uint8_t> plaintext;
};

// Opens exactly one complete record. EBADMSG when the tag does not verify.
Result<Opened> open_record(config::TlsVersion version, config::Cipher cipher, std::span<const uint8_t> key,
                           std::span<const uint8_t> iv, uint64_t seq, std::span<const uint8_t> record);

// Total size of the record starting at `header` (5 + length field), or 0 if fewer than 5 bytes.
size_t record_size(std::span<const uint8_t> header);

}  // namespace ktls_reference

}  // namespace ztp::crypto
