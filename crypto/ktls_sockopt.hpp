// The kernel TLS (kTLS) socket contract in one place: attach the "tls" ULP, hand a direction's
// traffic key to the kernel, and read from a kTLS RX socket the only safe way (recvmsg with a cmsg
// buffer). Used by the probe, the tests and the kernel record path. No OpenSSL handshake here:
// callers bring key material they derived themselves.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "config/policy.hpp"
#include "proxy/base/result.hpp"

namespace ztp::crypto {

enum class Direction { tx, rx };

// TLS record content types (RFC 8446 §5.1) as reported by TLS_GET_RECORD_TYPE.
inline constexpr uint8_t kRecordChangeCipherSpec = 20;
inline constexpr uint8_t kRecordAlert = 21;
inline constexpr uint8_t kRecordHandshake = 22;
inline constexpr uint8_t kRecordApplicationData = 23;
// The most plaintext one record may carry: 2^14 (RFC 8446 §5.1, RFC 5246 §6.2.1).
inline constexpr size_t kRecordMaxPlaintext = 16384;

// Every supported AEAD uses a 12-byte nonce base ("write IV"), laid out as in RFC 5288/8446/7905.
inline constexpr size_t kKtlsIvSize = 12;
// TLS 1.2 AES-GCM key blocks carry only the 4-byte implicit part (the salt).
inline constexpr size_t kKtlsTls12GcmSaltSize = 4;

size_t ktls_key_size(config::Cipher cipher);  // 16 for AES-128-GCM, 32 otherwise

// Attach the "tls" upper-layer protocol to a connected TCP socket. ENOENT = this kernel has no kTLS.
Result<void> ktls_enable_ulp(int fd);

// Install one direction's traffic key. `iv` is the 12-byte write IV:
//   TLS 1.3 (all ciphers) and TLS 1.2 CHACHA20-POLY1305: the full 12-byte IV, which is XORed with
//     the record sequence number to form each nonce.
//   TLS 1.2 AES-GCM: salt (4 implicit bytes from the key block) followed by the 8-byte explicit
//     nonce of the first record we send. A 4-byte `iv` (just the salt) is also accepted; the
//     explicit nonce then starts at `record_seq`, as in RFC 5288's suggestion and the kernel
//     selftests. For RX only the salt matters: the explicit nonce travels in each record.
// `record_seq` is the sequence number of the next record in that direction (0 after a handshake's
// key change; NewSessionTickets we sent under the key advance it).
// Errors: EMSGSIZE when the key or IV size does not fit the cipher (checked here: nothing reached
// the kernel); otherwise the kernel's errno from setsockopt (see ktls_sockopt.cpp).
Result<void> ktls_install(int fd, Direction dir, config::TlsVersion version, config::Cipher cipher,
                          std::span<const uint8_t> key, std::span<const uint8_t> iv, uint64_t record_seq);

// Bounds the plaintext of every record kTLS TX seals on `fd` (before TLS_TX is installed) to
// `max_plaintext` bytes: setsockopt(SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN), which newer kernels than 6.1
// have. ENOPROTOOPT where the kernel does not know the option.
Result<void> ktls_limit_tx_record(int fd, size_t max_plaintext);

// Installs the current TLS_RX key of `fd` again, at the record sequence number the kernel reached
// (getsockopt(TLS_RX) reports both). Why: Linux >= 6.14 pauses kTLS RX after any handshake record
// whose first byte is KeyUpdate's type, until a key is installed; when that record held only the
// first part of a KeyUpdate, the rest is still under the current key. EBUSY/EINVAL where the kernel
// cannot rekey (every kernel before 6.14), ENOTCONN/EBUSY without an RX key.
Result<void> ktls_resume_rx(int fd);

struct KtlsRecv {
    size_t bytes = 0;
    uint8_t record_type = kRecordApplicationData;
};

// One recvmsg on a kTLS RX socket with room for the TLS_GET_RECORD_TYPE control message. Returns
// 0 bytes at EOF. Errors: EBADMSG (authentication failed; `buf` has been scrubbed), EAGAIN, etc.
Result<KtlsRecv> ktls_recv(int fd, std::span<uint8_t> buf, int flags = 0);

// One record of content type `type` (alert, handshake, ...) on a kTLS TX socket: sendmsg tagged
// with TLS_SET_RECORD_TYPE, non-blocking. The sendmsg result (errno on -1).
ssize_t ktls_send_record(int fd, uint8_t type, std::span<const uint8_t> body);

}  // namespace ztp::crypto
