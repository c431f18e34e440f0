#include "crypto/ktls_probe.hpp"

#include "crypto/tls_wire.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>

#include "crypto/ktls_sockopt.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::crypto {

namespace ktls_reference {

namespace {

using wire::evp_cipher;
using wire::put_be;
using wire::tls12_aad;

constexpr size_t kHeaderSize = 5;
constexpr size_t kTagSize = 16;
constexpr size_t kExplicitNonceSize = 8;
constexpr size_t kMaxPlaintext = 16384;  // 2^14, RFC 8446 §5.1

struct CipherCtxFree {
    void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;


bool explicit_nonce(config::TlsVersion v, config::Cipher c) {
    return v == config::TlsVersion::tls1_2 && c != config::Cipher::chacha20_poly1305;
}


// RFC 8446 §5.3 / RFC 7905 §2: nonce = write IV XOR the sequence number, left-padded to 12 bytes.
std::array<uint8_t, 12> xor_nonce(std::span<const uint8_t> iv, uint64_t seq) {
    std::array<uint8_t, 12> n{};
    std::memcpy(n.data(), iv.data(), n.size());
    uint8_t s[8];
    put_be(s, seq, 8);
    for (size_t i = 0; i < 8; ++i) n[4 + i] ^= s[i];
    return n;
}


Result<void> check_sizes(config::Cipher cipher, std::span<const uint8_t> key, std::span<const uint8_t> iv) {
    if (key.size() != ktls_key_size(cipher) || iv.size() != kKtlsIvSize)
        return make_error(EINVAL, "ktls_reference: key or IV size");
    return ok_result();
}

}  // namespace

size_t record_size(std::span<const uint8_t> header) {
    if (header.size() < kHeaderSize) return 0;
    return kHeaderSize + (static_cast<size_t>(header[3]) << 8 | header[4]);
}

Result<std::vector<uint8_t>> seal_record(config::TlsVersion version, config::Cipher cipher,
                                         std::span<const uint8_t> key, std::span<const uint8_t> iv,
                                         uint64_t seq, uint8_t type, std::span<const uint8_t> plaintext) {
    if (auto r = check_sizes(cipher, key, iv); !r) return r.error();
    if (plaintext.size() > kMaxPlaintext) return make_error(EMSGSIZE, "ktls_reference: record too large");
    const bool tls13 = version == config::TlsVersion::tls1_3;
    const bool expl = explicit_nonce(version, cipher);

    // TLS 1.3 encrypts the real content type after the content (TLSInnerPlaintext, no padding).
    std::vector<uint8_t> inner(plaintext.begin(), plaintext.end());
    if (tls13) inner.push_back(type);
    const size_t prefix = expl ? kExplicitNonceSize : 0;
    const size_t body = prefix + inner.size() + kTagSize;

    std::vector<uint8_t> rec(kHeaderSize + body);
    rec[0] = tls13 ? kRecordApplicationData : type;  // TLS 1.3 outer type is always 23
    rec[1] = 3;
    rec[2] = 3;
    put_be(&rec[3], body, 2);

    std::array<uint8_t, 12> nonce{};
    if (expl) {
        // RFC 5288 §3: nonce = salt (implicit 4 bytes) || explicit 8 bytes sent in the record.
        std::memcpy(nonce.data(), iv.data(), 12);
        std::memcpy(&rec[kHeaderSize], iv.data() + 4, kExplicitNonceSize);
    } else {
        nonce = xor_nonce(iv, seq);
    }
    const auto aad12 = tls12_aad(seq, type, plaintext.size());
    const uint8_t* aad = tls13 ? rec.data() : aad12.data();
    const int aad_len = tls13 ? static_cast<int>(kHeaderSize) : static_cast<int>(aad12.size());

    CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    uint8_t* out = rec.data() + kHeaderSize + prefix;
    const bool ok =
        ctx && EVP_EncryptInit_ex(ctx.get(), evp_cipher(cipher), nullptr, key.data(), nonce.data()) == 1 &&
        EVP_EncryptUpdate(ctx.get(), nullptr, &len, aad, aad_len) == 1 &&
        EVP_EncryptUpdate(ctx.get(), out, &len, inner.data(), static_cast<int>(inner.size())) == 1 &&
        EVP_EncryptFinal_ex(ctx.get(), out + len, &len) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, kTagSize, out + inner.size()) == 1;
    OPENSSL_cleanse(inner.data(), inner.size());
    if (!ok) return make_error(EPROTO, "ktls_reference: EVP encrypt failed");
    return rec;
}

Result<Opened> open_record(config::TlsVersion version, config::Cipher cipher, std::span<const uint8_t> key,
                           std::span<const uint8_t> iv, uint64_t seq, std::span<const uint8_t> record) {
    if (auto r = check_sizes(cipher, key, iv); !r) return r.error();
    const bool tls13 = version == config::TlsVersion::tls1_3;
    const bool expl = explicit_nonce(version, cipher);
    const size_t prefix = expl ? kExplicitNonceSize : 0;
    if (record.size() < kHeaderSize || record_size(record) != record.size() ||
        record.size() < kHeaderSize + prefix + kTagSize + (tls13 ? 1 : 0))
        return make_error(EINVAL, "ktls_reference: not one complete record");
    if (record[1] != 3 || record[2] != 3)
        return make_error(EINVAL, "ktls_reference: record version is not 0x0303");
    if (tls13 && record[0] != kRecordApplicationData)
        return make_error(EINVAL, "ktls_reference: TLS 1.3 outer type is not application_data");

    const size_t ct_len = record.size() - kHeaderSize - prefix - kTagSize;
    std::array<uint8_t, 12> nonce{};
    if (expl) {
        std::memcpy(nonce.data(), iv.data(), 4);
        std::memcpy(nonce.data() + 4, &record[kHeaderSize], kExplicitNonceSize);
    } else {
        nonce = xor_nonce(iv, seq);
    }
    const auto aad12 = tls12_aad(seq, record[0], ct_len);
    const uint8_t* aad = tls13 ? record.data() : aad12.data();
    const int aad_len = tls13 ? static_cast<int>(kHeaderSize) : static_cast<int>(aad12.size());

    Opened o;
    o.plaintext.resize(ct_len);
    const uint8_t* ct = record.data() + kHeaderSize + prefix;
    std::array<uint8_t, kTagSize> tag{};
    std::memcpy(tag.data(), ct + ct_len, kTagSize);
    CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    const bool ok =
        ctx && EVP_DecryptInit_ex(ctx.get(), evp_cipher(cipher), nullptr, key.data(), nonce.data()) == 1 &&
        EVP_DecryptUpdate(ctx.get(), nullptr, &len, aad, aad_len) == 1 &&
        EVP_DecryptUpdate(ctx.get(), o.plaintext.data(), &len, ct, static_cast<int>(ct_len)) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, kTagSize, tag.data()) == 1 &&
        EVP_DecryptFinal_ex(ctx.get(), o.plaintext.data() + len, &len) == 1;
    if (!ok) {
        // Never hand out (or leave behind) bytes whose tag did not verify.
        OPENSSL_cleanse(o.plaintext.data(), o.plaintext.size());
        return make_error(EBADMSG, "ktls_reference: record authentication failed");
    }
    if (!tls13) {
        o.type = record[0];
        return o;
    }
    // TLSInnerPlaintext: content || type || zero padding; the type is the last non-zero byte.
    while (!o.plaintext.empty() && o.plaintext.back() == 0) o.plaintext.pop_back();
    if (o.plaintext.empty())
        return make_error(EBADMSG, "ktls_reference: TLS 1.3 record without content type");
    o.type = o.plaintext.back();
    o.plaintext.pop_back();
    return o;
}

}  // namespace ktls_reference

namespace {

constexpr config::TlsVersion kVersions[] = {config::TlsVersion::tls1_2, config::TlsVersion::tls1_3};
constexpr config::Cipher kCiphers[] = {config::Cipher::aes_128_gcm, config::Cipher::aes_256_gcm,
                                       config::Cipher::chacha20_poly1305};

// Throwaway key material: the probe proves the mechanism, it protects nothing. A sequence number
// with every byte different catches a rec_seq byte-order mistake.
constexpr uint64_t kProbeSeq = 0x0102030405060708ULL;
constexpr char kProbeMessage[] = "ztproxy kTLS probe record";

struct TcpPair {
    UniqueFd a, b;
};

std::string error_text(const Error& e) { return e.message(); }

Result<TcpPair> tcp_pair() {
    UniqueFd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!l) return errno_error("socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        return errno_error("bind 127.0.0.1:0");
    if (::listen(l.get(), 1) != 0) return errno_error("listen");
    if (::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &al) != 0) return errno_error("getsockname");
    TcpPair p;
    p.a.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!p.a) return errno_error("socket");
    // Loopback connect to a listening socket completes from the backlog; no accept needed first.
    if (::connect(p.a.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return errno_error("connect");
    p.b.reset(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!p.b) return errno_error("accept");
    // A broken kernel path must make the probe report an error, not hang `ztproxy probe`.
    timeval tv{5, 0};
    for (int fd : {p.a.get(), p.b.get()}) {
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    return p;
}

Result<void> send_all(int fd, std::span<const uint8_t> data) {
    while (!data.empty()) {
        const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno_error("send");
        }
        data = data.subspan(static_cast<size_t>(n));
    }
    return ok_result();
}

// Reads exactly one TLS record from a plain (non-kTLS) socket.
Result<std::vector<uint8_t>> read_record(int fd) {
    std::vector<uint8_t> rec(5);
    size_t want = rec.size(), got = 0;
    while (got < want) {
        const ssize_t n = ::recv(fd, rec.data() + got, want - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error("recv raw record");
        if (n == 0) return make_error(ECONNRESET, "recv raw record: EOF");
        got += static_cast<size_t>(n);
        if (got == 5 && want == 5) {
            want = ktls_reference::record_size(rec);
            rec.resize(want);
        }
    }
    return rec;
}

struct Material {
    std::array<uint8_t, 32> key{};
    std::array<uint8_t, 12> iv{};
    std::span<const uint8_t> key_for(config::Cipher c) const { return {key.data(), ktls_key_size(c)}; }
};

Material material(uint8_t fill) {
    Material m;
    for (size_t i = 0; i < m.key.size(); ++i) m.key[i] = static_cast<uint8_t>(fill + i);
    for (size_t i = 0; i < m.iv.size(); ++i) m.iv[i] = static_cast<uint8_t>(fill ^ (0xa0 + i));
    return m;
}

std::span<const uint8_t> probe_message() {
    return {reinterpret_cast<const uint8_t*>(kProbeMessage), sizeof kProbeMessage - 1};
}

// TX: the kernel encrypts a record on socket a; a plain socket b reads the raw record and OpenSSL
// must open it with the same key, IV and sequence number.
Result<void> check_tx(config::TlsVersion v, config::Cipher c) {
    auto pair = tcp_pair();
    if (!pair) return pair.error();
    const Material m = material(0x11);
    if (auto r = ktls_enable_ulp(pair->a.get()); !r) return r.error();
    if (auto r = ktls_install(pair->a.get(), Direction::tx, v, c, m.key_for(c), m.iv, kProbeSeq); !r)
        return r.error();
    if (auto r = send_all(pair->a.get(), probe_message()); !r) return r.error();
    auto rec = read_record(pair->b.get());
    if (!rec) return rec.error();
    auto opened = ktls_reference::open_record(v, c, m.key_for(c), m.iv, kProbeSeq, *rec);
    if (!opened) return make_error(opened.error().code, "kernel TX record does not open with OpenSSL");
    const auto msg = probe_message();
    if (opened->type != kRecordApplicationData ||
        !std::equal(opened->plaintext.begin(), opened->plaintext.end(), msg.begin(), msg.end()))
        return make_error(EPROTO, "kernel TX record decrypts to different bytes");
    return ok_result();
}

// RX: OpenSSL seals a record, a plain socket a sends it, and the kernel must decrypt it on b.
Result<void> check_rx(config::TlsVersion v, config::Cipher c) {
    auto pair = tcp_pair();
    if (!pair) return pair.error();
    const Material m = material(0x51);
    if (auto r = ktls_enable_ulp(pair->b.get()); !r) return r.error();
    if (auto r = ktls_install(pair->b.get(), Direction::rx, v, c, m.key_for(c), m.iv, kProbeSeq); !r)
        return r.error();
    auto rec = ktls_reference::seal_record(v, c, m.key_for(c), m.iv, kProbeSeq, kRecordApplicationData,
                                           probe_message());
    if (!rec) return rec.error();
    if (auto r = send_all(pair->a.get(), *rec); !r) return r.error();
    std::array<uint8_t, 256> buf{};
    auto got = ktls_recv(pair->b.get(), buf);
    if (!got) return got.error();
    const auto msg = probe_message();
    if (got->record_type != kRecordApplicationData ||
        !std::equal(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(got->bytes), msg.begin(),
                    msg.end()))
        return make_error(EPROTO, "kernel RX decrypted to different bytes");
    return ok_result();
}

}  // namespace

KtlsProbe probe_ktls() {
    KtlsProbe p;
    for (auto v : kVersions)
        for (auto c : kCiphers) {
            KtlsProbeEntry e;
            e.version = v;
            e.cipher = c;
            p.entries.push_back(std::move(e));
        }

    // One ULP attempt first: without the "tls" ULP every combination fails the same way, and the
    // reason belongs in one place.
    auto pair = tcp_pair();
    if (!pair) {
        p.why_not = "cannot make a loopback TCP pair: " + error_text(pair.error());
    } else if (auto r = ktls_enable_ulp(pair->a.get()); !r) {
        p.why_not = error_text(r.error());
        if (r.error().code == ENOENT)
            p.why_not += " \u2014 kernel built without CONFIG_TLS or tls module not loaded";
    } else {
        p.ulp_available = true;
    }
    if (!p.ulp_available) {
        for (auto& e : p.entries) e.error = "no kTLS: " + p.why_not;
        return p;
    }

    for (auto& e : p.entries) {
        auto tx = check_tx(e.version, e.cipher);
        auto rx = check_rx(e.version, e.cipher);
        e.tx = tx.ok();
        e.rx = rx.ok();
        if (!tx) e.error = "TX: " + error_text(tx.error());
        if (!rx) e.error += std::string(e.error.empty() ? "" : "; ") + "RX: " + error_text(rx.error());
    }
    return p;
}

}  // namespace ztp::crypto
