#include "crypto/session_keys.hpp"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/tls1.h>

#include <array>
#include <cstring>
#include <new>
#include <string_view>

#include "crypto/keylog_hex.hpp"

namespace ztp::crypto {

namespace {

constexpr size_t kRandomSize = 32;
constexpr size_t kMasterSecretSize = 48;

// Per-direction record accounting, fed by the message callback. Two markers, because the point where
// a direction's application key takes over differs by version:
//   TLS 1.2: the ChangeCipherSpec record (seen as a record header of type 20); every later record is
//            protected by the key_block keys, the first being the Finished.
//   TLS 1.3: the Finished handshake message (reported after its record went through); OpenSSL switches
//            that direction to the application traffic key right after it.
// Which marker counts is decided once the version is known, in take_session_keys.
struct DirectionCount {
    unsigned ccs_records = 0;     // ChangeCipherSpec records seen in this direction
    uint64_t after_ccs = 0;       // records after the (last) ChangeCipherSpec record
    unsigned finished_msgs = 0;   // Finished handshake messages seen in this direction
    uint64_t after_finished = 0;  // records after the (last) Finished
    bool key_update = false;      // a TLS 1.3 KeyUpdate went through: secret_0 is no longer current
};

// Per-SSL capture state, owned by the SSL's ex_data (allocated by the ex_data new callback at SSL_new,
// freed — and thereby scrubbed — by the free callback at SSL_free).
struct Capture {
    SecretBytes client_secret;  // TLS 1.3 CLIENT_TRAFFIC_SECRET_0
    SecretBytes server_secret;  // TLS 1.3 SERVER_TRAFFIC_SECRET_0
    bool bad_keylog = false;    // a line for our labels that did not parse or named another connection
    DirectionCount tx;          // records we wrote
    DirectionCount rx;          // records we read
    bool taken = false;
};

void new_capture(void*, void*, CRYPTO_EX_DATA* ad, int idx, long, void*) {
    // No capture state means take_session_keys() fails with ENOKEY: allocation failure fails closed.
    Capture* st = new (std::nothrow) Capture();
    if (st != nullptr && CRYPTO_set_ex_data(ad, idx, st) != 1) delete st;
}

int dup_capture(CRYPTO_EX_DATA* to, const CRYPTO_EX_DATA*, void** from_d, int idx, long, void*) {
    // SSL_dup(): the copy must never share (and double-free) nor inherit key material. Keep the copy's
    // own fresh state from new_capture.
    *from_d = CRYPTO_get_ex_data(to, idx);
    return 1;
}

void free_capture(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
    delete static_cast<Capture*>(ptr);  // ~SecretBytes scrubs the secrets that were never taken
}

// One index for the whole process: allocated on first use, thread-safe by C++ static initialisation,
// shared by every SSL_CTX (an SNI switch moves an SSL to another context; its ex_data stays).
int capture_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, new_capture, dup_capture, free_capture);
    return index;
}

Capture* capture_of(const SSL* ssl) {
    const int idx = capture_index();
    if (idx < 0 || ssl == nullptr) return nullptr;
    return static_cast<Capture*>(SSL_get_ex_data(ssl, idx));
}

int hex_nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Decodes hex straight into `out`, which must be exactly hex.size() / 2 bytes.
bool hex_decode(std::string_view hex, std::span<uint8_t> out) {
    if (hex.size() != 2 * out.size()) return false;
    for (size_t i = 0; i < out.size(); ++i) {
        const int hi = hex_nibble(hex[2 * i]);
        const int lo = hex_nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return true;
}

// NSS key log format: "<LABEL> <client_random hex> <secret hex>". We keep only the two application
// traffic secrets; every other label (handshake secrets, exporter, TLS 1.2 CLIENT_RANDOM) is ignored.
// The line is never stored, copied or logged (OpenSSL scrubs it after we return).
void on_keylog(const SSL* ssl, const char* line) {
    Capture* st = capture_of(ssl);
    if (st == nullptr || line == nullptr) return;
    static constexpr std::string_view kClient = "CLIENT_TRAFFIC_SECRET_0 ";
    static constexpr std::string_view kServer = "SERVER_TRAFFIC_SECRET_0 ";
    std::string_view rest(line);
    SecretBytes* dst = nullptr;
    if (rest.starts_with(kClient)) {
        dst = &st->client_secret;
        rest.remove_prefix(kClient.size());
    } else if (rest.starts_with(kServer)) {
        dst = &st->server_secret;
        rest.remove_prefix(kServer.size());
    } else {
        return;
    }
    // The client random ties the line to this connection; a mismatch would mean keys for another
    // connection (cannot happen with OpenSSL's callback, but a wrong key here is a silent failure later).
    std::array<uint8_t, kRandomSize> logged{};
    std::array<uint8_t, kRandomSize> ours{};
    const bool random_ok = rest.size() > 2 * kRandomSize + 1 && rest[2 * kRandomSize] == ' ' &&
                           hex_decode(rest.substr(0, 2 * kRandomSize), logged) &&
                           SSL_get_client_random(ssl, ours.data(), ours.size()) == kRandomSize &&
                           CRYPTO_memcmp(logged.data(), ours.data(), kRandomSize) == 0;
    if (!random_ok) {
        dst->reset();
        st->bad_keylog = true;
        return;
    }
    rest.remove_prefix(2 * kRandomSize + 1);
    while (!rest.empty() && (rest.back() == '\n' || rest.back() == '\r')) rest.remove_suffix(1);
    auto out = dst->writable(rest.size() / 2);
    if (rest.size() % 2 != 0 || out.empty() || !hex_decode(rest, out)) {
        dst->reset();  // scrubs whatever was half-decoded
        st->bad_keylog = true;
    }
}

void on_message(int write_p, int, int content_type, const void* buf, size_t len, SSL* ssl, void*) {
    Capture* st = capture_of(ssl);
    if (st == nullptr || buf == nullptr || len == 0) return;
    DirectionCount& d = write_p ? st->tx : st->rx;
    const uint8_t first = *static_cast<const uint8_t*>(buf);
    if (content_type == SSL3_RT_HEADER) {
        // Every record that passes, whatever it carries, consumes one sequence number of the key in
        // force for its direction.
        if (d.ccs_records > 0) ++d.after_ccs;
        if (d.finished_msgs > 0) ++d.after_finished;
        if (first == SSL3_RT_CHANGE_CIPHER_SPEC) {
            ++d.ccs_records;
            d.after_ccs = 0;
        }
    } else if (content_type == SSL3_RT_HANDSHAKE) {
        if (first == SSL3_MT_FINISHED) {
            ++d.finished_msgs;
            d.after_finished = 0;
        } else if (first == SSL3_MT_KEY_UPDATE && d.finished_msgs > 0) {
            d.key_update = true;
        }
    }
}

struct SuiteInfo {
    unsigned long id;
    int version;
    config::Cipher cipher;
};

// The only suites whose records the kernel and our record layer carry: the AEADs tls_context.cpp
// offers, with ECDHE key exchange for TLS 1.2. Anything else (CBC, CCM, ARIA, static RSA, PSK...)
// stays with OpenSSL, even where the AEAD would match: a new suite must be reviewed, not inherited.
constexpr SuiteInfo kSuites[] = {
    {TLS1_3_CK_AES_128_GCM_SHA256, TLS1_3_VERSION, config::Cipher::aes_128_gcm},
    {TLS1_3_CK_AES_256_GCM_SHA384, TLS1_3_VERSION, config::Cipher::aes_256_gcm},
    {TLS1_3_CK_CHACHA20_POLY1305_SHA256, TLS1_3_VERSION, config::Cipher::chacha20_poly1305},
    {TLS1_CK_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS1_2_VERSION, config::Cipher::aes_128_gcm},
    {TLS1_CK_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS1_2_VERSION, config::Cipher::aes_128_gcm},
    {TLS1_CK_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS1_2_VERSION, config::Cipher::aes_256_gcm},
    {TLS1_CK_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS1_2_VERSION, config::Cipher::aes_256_gcm},
    {TLS1_CK_ECDHE_ECDSA_WITH_CHACHA20_POLY1305, TLS1_2_VERSION, config::Cipher::chacha20_poly1305},
    {TLS1_CK_ECDHE_RSA_WITH_CHACHA20_POLY1305, TLS1_2_VERSION, config::Cipher::chacha20_poly1305},
};

Result<config::Cipher> suite_cipher(const SSL* ssl, int version) {
    const SSL_CIPHER* c = SSL_get_current_cipher(ssl);
    if (c == nullptr) return make_error(EINVAL, "take_session_keys: no negotiated cipher");
    const unsigned long id = SSL_CIPHER_get_id(c);
    for (const auto& s : kSuites) {
        if (s.id != id) continue;
        if (s.version != version) break;
        // Cross-check our table against OpenSSL: the suite's hash is the TLS 1.3 HKDF hash and the
        // TLS 1.2 PRF hash. A disagreement would derive wrong keys; refuse rather than guess.
        const EVP_MD* md = SSL_CIPHER_get_handshake_digest(c);
        const int want = s.cipher == config::Cipher::aes_256_gcm ? NID_sha384 : NID_sha256;
        if (md == nullptr || EVP_MD_get_type(md) != want)
            return make_error(EPROTO, "take_session_keys: suite hash differs from the expected one");
        return s.cipher;
    }
    return make_error(ENOTSUP, "take_session_keys: cipher suite not supported outside OpenSSL");
}

// The record count under a direction's application key, from the marker that applies to `version`.
// The marker must have passed exactly once: zero means we did not see the handshake (no capture), more
// means a renegotiation or a second handshake whose keys we do not follow.
Result<uint64_t> records_under_key(const DirectionCount& d, bool tls13) {
    const unsigned markers = tls13 ? d.finished_msgs : d.ccs_records;
    if (markers == 0) return make_error(ENOKEY, "take_session_keys: record counts were not captured");
    if (markers != 1) return make_error(EPROTO, "take_session_keys: more than one key change in a direction");
    if (tls13 && d.key_update)
        return make_error(EPROTO, "take_session_keys: a KeyUpdate already went through OpenSSL");
    return tls13 ? d.after_finished : d.after_ccs;
}

Result<SessionKeys> tls13_keys(Capture& st, config::Cipher cipher) {
    if (st.bad_keylog) return make_error(EPROTO, "take_session_keys: unusable keylog line");
    if (st.client_secret.empty() || st.server_secret.empty())
        return make_error(ENOKEY, "take_session_keys: TLS 1.3 traffic secrets were not captured");
    auto rx = tls13_traffic_keys(cipher, st.client_secret.view());
    if (!rx) return rx.error().code == EINVAL ? make_error(EPROTO, rx.error().what) : rx.error();
    auto tx = tls13_traffic_keys(cipher, st.server_secret.view());
    if (!tx) return tx.error().code == EINVAL ? make_error(EPROTO, tx.error().what) : tx.error();
    SessionKeys k;
    k.rx = std::move(rx).value();
    k.tx = std::move(tx).value();
    // Moving scrubs the copies in ex_data: the caller's SessionKeys becomes the only holder.
    k.rx_secret = std::move(st.client_secret);
    k.tx_secret = std::move(st.server_secret);
    return k;
}

Result<SessionKeys> tls12_keys(SSL* ssl, config::Cipher cipher) {
    const SSL_SESSION* session = SSL_get_session(ssl);
    if (session == nullptr) return make_error(EINVAL, "take_session_keys: no session");
    std::array<uint8_t, kMasterSecretSize> master{};
    std::array<uint8_t, kRandomSize> client_random{};
    std::array<uint8_t, kRandomSize> server_random{};
    const size_t master_len = SSL_SESSION_get_master_key(session, master.data(), master.size());
    const bool ok = master_len == kMasterSecretSize &&
                    SSL_get_client_random(ssl, client_random.data(), client_random.size()) == kRandomSize &&
                    SSL_get_server_random(ssl, server_random.data(), server_random.size()) == kRandomSize;
    // With extended master secret (RFC 7627) the master secret differs, but the key expansion does not.
    auto block = ok ? tls12_key_block(cipher, master, client_random, server_random)
                    : Result<std::pair<DirectionKeys, DirectionKeys>>(
                          make_error(EPROTO, "take_session_keys: TLS 1.2 master secret or randoms"));
    OPENSSL_cleanse(master.data(), master.size());
    if (!block) return block.error();
    SessionKeys k;
    k.rx = std::move(block.value().first);   // client_write: what the client sends us
    k.tx = std::move(block.value().second);  // server_write: what we send
    return k;
}

}  // namespace

void enable_key_capture(SSL_CTX* ctx) {
    if (ctx == nullptr) return;
    (void)capture_index();  // allocate the index before any SSL is created from this context
    // OpenSSL formats every secret as hex before it calls us; the fast path for that formatting
    // (keylog_hex.cpp) must be in the binary. Asking whether it is active keeps it there.
    (void)keylog_hex_fast_path_active();
    SSL_CTX_set_keylog_callback(ctx, on_keylog);
    SSL_CTX_set_msg_callback(ctx, on_message);
}

Result<SessionKeys> take_session_keys(SSL* ssl) {
    if (ssl == nullptr || !SSL_is_server(ssl))
        return make_error(EINVAL, "take_session_keys: not a server SSL");
    if (!SSL_is_init_finished(ssl)) return make_error(EINVAL, "take_session_keys: handshake not finished");
    Capture* st = capture_of(ssl);
    if (st == nullptr) return make_error(ENOKEY, "take_session_keys: key capture not enabled");
    // One shot: a second caller would install keys whose sequence numbers someone else already uses
    // (nonce reuse under AES-GCM / ChaCha20 is fatal for confidentiality and integrity).
    if (st->taken) return make_error(EALREADY, "take_session_keys: keys already taken");
    // If OpenSSL already put kTLS on the socket it owns the sequence numbers; two writers of one key
    // stream would reuse nonces.
    BIO* wbio = SSL_get_wbio(ssl);
    BIO* rbio = SSL_get_rbio(ssl);
    if ((wbio != nullptr && BIO_get_ktls_send(wbio) > 0) || (rbio != nullptr && BIO_get_ktls_recv(rbio) > 0))
        return make_error(EALREADY, "take_session_keys: OpenSSL enabled kTLS itself");

    const int version = SSL_version(ssl);
    if (version != TLS1_2_VERSION && version != TLS1_3_VERSION)
        return make_error(ENOTSUP, "take_session_keys: protocol version not supported outside OpenSSL");
    const bool tls13 = version == TLS1_3_VERSION;
    auto cipher = suite_cipher(ssl, version);
    if (!cipher) return cipher.error();
    auto rx_seq = records_under_key(st->rx, tls13);
    if (!rx_seq) return rx_seq.error();
    auto tx_seq = records_under_key(st->tx, tls13);
    if (!tx_seq) return tx_seq.error();

    auto keys = tls13 ? tls13_keys(*st, *cipher) : tls12_keys(ssl, *cipher);
    // Whatever happened, nothing stays behind in ex_data and nobody takes the keys twice.
    st->client_secret.reset();
    st->server_secret.reset();
    st->taken = true;
    if (!keys) return keys.error();
    keys->rx.seq = *rx_seq;
    keys->tx.seq = *tx_seq;
    keys->max_plaintext = negotiated_max_fragment_length(ssl);
    return keys;
}

size_t negotiated_max_fragment_length(const SSL* ssl) {
    const SSL_SESSION* session = ssl != nullptr ? SSL_get0_session(ssl) : nullptr;
    // RFC 6066 §4: codes 1..4 are 2^9..2^12 bytes. OpenSSL records the code in the session only when
    // it accepted the client's extension (and echoed it), so anything else means no limit.
    const uint8_t code = session != nullptr ? SSL_SESSION_get_max_fragment_length(session) : 0;
    if (code >= TLSEXT_max_fragment_length_512 && code <= TLSEXT_max_fragment_length_4096)
        return size_t{512} << (code - TLSEXT_max_fragment_length_512);
    return kRecordMaxPlaintext;
}

bool has_buffered_input(const SSL* ssl) {
    // SSL_has_pending: decrypted-but-unread records *and* raw bytes in the read-ahead buffer.
    // SSL_pending: decrypted application bytes (covered by the former; kept for clarity).
    return ssl != nullptr && (SSL_has_pending(ssl) == 1 || SSL_pending(ssl) > 0);
}

}  // namespace ztp::crypto
