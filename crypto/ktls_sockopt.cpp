#include "crypto/ktls_sockopt.hpp"

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <sys/socket.h>

#include <cstring>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

namespace ztp::crypto {

namespace {

// One of the three layouts the kernel accepts for TLS_TX/TLS_RX; all start with tls_crypto_info.
union CryptoInfo {
    tls_crypto_info info;
    tls12_crypto_info_aes_gcm_128 gcm128;
    tls12_crypto_info_aes_gcm_256 gcm256;
    tls12_crypto_info_chacha20_poly1305 chacha;
};

// Scrubs the key copy on every path out of ktls_install.
struct CryptoInfoGuard {
    CryptoInfo ci{};
    ~CryptoInfoGuard() { OPENSSL_cleanse(&ci, sizeof ci); }
};

// rec_seq is a 64-bit big-endian counter: the kernel increments it as a byte string from the last
// byte (tls_bigint_increment) and feeds it into the AAD/nonce as-is.
void put_be64(unsigned char* out, uint64_t v) {
    for (int i = 7; i >= 0; --i) {
        out[i] = static_cast<unsigned char>(v & 0xff);
        v >>= 8;
    }
}

// Fills the AES-GCM layouts (same field order for 128 and 256; only the key length differs).
template <typename Gcm>
void fill_gcm(Gcm& g, config::TlsVersion version, std::span<const uint8_t> key, std::span<const uint8_t> iv,
              uint64_t record_seq) {
    static_assert(sizeof g.salt == kKtlsTls12GcmSaltSize && sizeof g.iv == 8);
    std::memcpy(g.key, key.data(), sizeof g.key);
    // Both versions: salt = the first 4 bytes of the write IV.
    std::memcpy(g.salt, iv.data(), sizeof g.salt);
    if (version == config::TlsVersion::tls1_3 || iv.size() == kKtlsIvSize) {
        // TLS 1.3: nonce = (salt || iv) XOR seq, so iv = the remaining 8 bytes of the write IV.
        // TLS 1.2 with a full 12-byte IV: the caller chose the first explicit nonce. The kernel
        // sends it in the first record and increments it per record (tls_advance_record_sn).
        std::memcpy(g.iv, iv.data() + sizeof g.salt, sizeof g.iv);
    } else {
        // TLS 1.2 with only the salt: explicit nonce = sequence number. Unique per key, which is
        // all RFC 5288 asks, and it advances in step with rec_seq.
        put_be64(g.iv, record_seq);
    }
    put_be64(g.rec_seq, record_seq);
}

}  // namespace

size_t ktls_key_size(config::Cipher cipher) {
    return cipher == config::Cipher::aes_128_gcm ? TLS_CIPHER_AES_GCM_128_KEY_SIZE
                                                 : TLS_CIPHER_AES_GCM_256_KEY_SIZE;
}

Result<void> ktls_enable_ulp(int fd) {
    // Kernel contract: TCP_ULP "tls" only attaches to an ESTABLISHED TCP socket (ENOTCONN
    // otherwise) and only once (EEXIST). ENOENT means no "tls" ULP is registered: the kernel was
    // built without CONFIG_TLS, or tls.ko is not loaded and cannot be (the kernel tries
    // request_module("tcp-ulp-tls") first). Attaching alone changes nothing on the wire; records
    // start only with TLS_TX/TLS_RX.
    static constexpr char kUlp[] = "tls";
    if (::setsockopt(fd, SOL_TCP, TCP_ULP, kUlp, sizeof kUlp - 1) != 0)
        return errno_error("setsockopt(TCP_ULP, \"tls\")");
    return ok_result();
}

Result<void> ktls_install(int fd, Direction dir, config::TlsVersion version, config::Cipher cipher,
                          std::span<const uint8_t> key, std::span<const uint8_t> iv, uint64_t record_seq) {
    if (key.size() != ktls_key_size(cipher))
        return make_error(EMSGSIZE, "ktls_install: key size does not match cipher");
    const bool tls12_gcm =
        version == config::TlsVersion::tls1_2 && cipher != config::Cipher::chacha20_poly1305;
    if (iv.size() != kKtlsIvSize && !(tls12_gcm && iv.size() == kKtlsTls12GcmSaltSize))
        return make_error(EMSGSIZE, "ktls_install: IV must be 12 bytes (or a 4-byte salt for TLS 1.2 AES-GCM)");

    CryptoInfoGuard g;
    CryptoInfo& ci = g.ci;
    ci.info.version = version == config::TlsVersion::tls1_2 ? TLS_1_2_VERSION : TLS_1_3_VERSION;
    socklen_t len = 0;
    switch (cipher) {
        case config::Cipher::aes_128_gcm:
            ci.info.cipher_type = TLS_CIPHER_AES_GCM_128;
            fill_gcm(ci.gcm128, version, key, iv, record_seq);
            len = sizeof ci.gcm128;
            break;
        case config::Cipher::aes_256_gcm:
            ci.info.cipher_type = TLS_CIPHER_AES_GCM_256;
            fill_gcm(ci.gcm256, version, key, iv, record_seq);
            len = sizeof ci.gcm256;
            break;
        case config::Cipher::chacha20_poly1305:
            // RFC 7905 (TLS 1.2) and RFC 8446 (TLS 1.3) agree: nonce = iv XOR seq, the whole
            // 12-byte IV goes in `iv` and this layout has no salt (SALT_SIZE is 0).
            ci.info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
            std::memcpy(ci.chacha.key, key.data(), sizeof ci.chacha.key);
            std::memcpy(ci.chacha.iv, iv.data(), sizeof ci.chacha.iv);
            put_be64(ci.chacha.rec_seq, record_seq);
            len = sizeof ci.chacha;
            break;
    }

    // Kernel contract (net/tls/tls_main.c do_tls_setsockopt_conf):
    //  * optlen must be exactly the size of this cipher's struct, else EINVAL; an unknown version
    //    or cipher is EINVAL too.
    //  * Each direction can be set once (EBUSY on a second try). Linux >= 6.14 takes a second one
    //    on a TLS 1.3 socket as a KeyUpdate's next key (same version and cipher; EINVAL otherwise).
    //    The ULP must already be attached (ENOPROTOOPT for SOL_TLS otherwise).
    //  * The kernel copies the struct; our copy is scrubbed by CryptoInfoGuard.
    //  * TX: every byte written afterwards is framed into records starting at rec_seq; nothing
    //    may still sit unsent in a user-space TLS library.
    //  * RX: the kernel parses records from the current stream position, including bytes already
    //    queued on the socket, so user space must not have consumed part of a record.
    //  * A version or cipher this kernel does not know is EINVAL; ENOENT means it lacks the AEAD
    //    ("gcm(aes)", "rfc7539(chacha20,poly1305)") and could not load it (install_failure_reason).
    const int opt = dir == Direction::tx ? TLS_TX : TLS_RX;
    if (::setsockopt(fd, SOL_TLS, opt, &ci, len) != 0)
        return errno_error(dir == Direction::tx ? "setsockopt(SOL_TLS, TLS_TX)"
                                                : "setsockopt(SOL_TLS, TLS_RX)");
    return ok_result();
}

Result<void> ktls_resume_rx(int fd) {
    // Kernel contract (net/tls/tls_main.c do_tls_getsockopt_conf): getsockopt(TLS_RX) with exactly
    // sizeof(tls_crypto_info) reports version and cipher only; with exactly the cipher's struct
    // size, the whole struct, key included, with rec_seq = the next record's sequence number.
    // setsockopt takes that struct back as a rekey (same version and cipher, TLS 1.3 only).
    CryptoInfoGuard g;
    CryptoInfo& ci = g.ci;
    socklen_t len = sizeof ci.info;
    if (::getsockopt(fd, SOL_TLS, TLS_RX, &ci, &len) != 0) return errno_error("getsockopt(SOL_TLS, TLS_RX)");
    switch (ci.info.cipher_type) {
        case TLS_CIPHER_AES_GCM_128: len = sizeof ci.gcm128; break;
        case TLS_CIPHER_AES_GCM_256: len = sizeof ci.gcm256; break;
        case TLS_CIPHER_CHACHA20_POLY1305: len = sizeof ci.chacha; break;
        default: return make_error(EINVAL, "ktls_resume_rx: unknown kTLS cipher");
    }
    if (::getsockopt(fd, SOL_TLS, TLS_RX, &ci, &len) != 0) return errno_error("getsockopt(SOL_TLS, TLS_RX)");
    if (::setsockopt(fd, SOL_TLS, TLS_RX, &ci, len) != 0) return errno_error("setsockopt(SOL_TLS, TLS_RX) again");
    return ok_result();
}

Result<void> ktls_limit_tx_record(int fd, size_t max_plaintext) {
    // Not in Debian 12's <linux/tls.h>: the uapi value (include/uapi/linux/tls.h) of the option
    // that bounds kTLS TX records (Documentation/networking/tls.rst "TLS_TX_MAX_PAYLOAD_LEN": the
    // plaintext bound, record_size_limit - 1 for TLS 1.3, which is max_fragment_length itself).
#ifndef TLS_TX_MAX_PAYLOAD_LEN
    constexpr int TLS_TX_MAX_PAYLOAD_LEN = 5;
#endif
    if (max_plaintext == 0 || max_plaintext > kRecordMaxPlaintext)
        return make_error(EINVAL, "kTLS TX record limit must be 1..2^14");
    const uint16_t v = static_cast<uint16_t>(max_plaintext);
    if (::setsockopt(fd, SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN, &v, sizeof v) != 0)
        return errno_error("setsockopt(SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN)");
    return ok_result();
}

Result<KtlsRecv> ktls_recv(int fd, std::span<uint8_t> buf, int flags) {
    // Kernel contract: a kTLS RX socket returns the record type as a SOL_TLS/TLS_GET_RECORD_TYPE
    // control message. Without room for it, a non-application-data record (alert, KeyUpdate,
    // NewSessionTicket) fails the read with EIO; with it, one recvmsg never mixes record types,
    // so a control record arrives alone and its type tells the caller to leave the data path.
    alignas(cmsghdr) unsigned char control[CMSG_SPACE(sizeof(unsigned char))];
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &msg, flags);
    if (n < 0) {
        const int err = errno;
        // EBADMSG: the AEAD tag did not verify. The kernel may already have decrypted into our
        // buffer (zero-copy decrypt into user pages), so unauthenticated plaintext must not
        // survive; the socket stays failed afterwards.
        if (err == EBADMSG) OPENSSL_cleanse(buf.data(), buf.size());
        return make_error(err, "recvmsg on kTLS socket");
    }
    KtlsRecv r;
    r.bytes = static_cast<size_t>(n);
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE) r.record_type = *CMSG_DATA(c);
    }
    return r;
}

ssize_t ktls_send_record(int fd, uint8_t type, std::span<const uint8_t> body) {
    iovec iov{const_cast<uint8_t*>(body.data()), body.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(uint8_t))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    // kTLS contract: a non-data record is sent by tagging the sendmsg with its content type. The
    // kernel first closes any record still open from earlier data, so this one stands alone and
    // follows everything written before it.
    cmsg->cmsg_level = SOL_TLS;
    cmsg->cmsg_type = TLS_SET_RECORD_TYPE;
    cmsg->cmsg_len = CMSG_LEN(sizeof(uint8_t));
    *CMSG_DATA(cmsg) = type;
    return ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace ztp::crypto
