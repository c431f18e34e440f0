// crypto/session_keys: differential tests against OpenSSL's own record layer. A client and a server
// SSL talk over an in-memory BIO pair in one thread. After the server handshake we take the keys, then
//   (1) records the client's OpenSSL writes must open with rx keys at rx.seq, rx.seq+1, ...;
//   (2) records we seal with tx keys at tx.seq, ... must be read by the client's OpenSSL —
// so a wrong key, IV layout or sequence number (e.g. NewSessionTickets not counted) fails here.
// Parameterised over TLS {1.2, 1.3} × {AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305} × tickets {0, 2}.
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "crypto/key_schedule.hpp"
#include "crypto/ktls_key_update.hpp"
#include "crypto/ktls_probe.hpp"
#include "crypto/session_keys.hpp"
#include "proxy/base/c_deleters.hpp"
#include "tls_test_support.hpp"

namespace ztp::crypto {
namespace {

using namespace ztp::crypto::testing;

using Bytes = std::vector<uint8_t>;
using config::Cipher;
using config::TlsVersion;

// ---------------------------------------------------------------------------------------------
// Fixtures: an ECDSA P-256 self-signed certificate, contexts, a connected client/server pair.



const char* tls12_suite(Cipher c) {
    switch (c) {
        case Cipher::aes_128_gcm: return "ECDHE-ECDSA-AES128-GCM-SHA256";
        case Cipher::aes_256_gcm: return "ECDHE-ECDSA-AES256-GCM-SHA384";
        case Cipher::chacha20_poly1305: return "ECDHE-ECDSA-CHACHA20-POLY1305";
    }
    return "";
}

const char* tls13_suite(Cipher c) {
    switch (c) {
        case Cipher::aes_128_gcm: return "TLS_AES_128_GCM_SHA256";
        case Cipher::aes_256_gcm: return "TLS_AES_256_GCM_SHA384";
        case Cipher::chacha20_poly1305: return "TLS_CHACHA20_POLY1305_SHA256";
    }
    return "";
}

struct ContextOptions {
    TlsVersion version = TlsVersion::tls1_3;
    Cipher cipher = Cipher::aes_128_gcm;
    int tickets = 2;
    const char* tls12_cipher_override = nullptr;  // e.g. a CBC suite for the ENOTSUP test
    bool capture = true;
    bool read_ahead = false;
};

void configure_common(SSL_CTX* ctx, const ContextOptions& o) {
    const int v = o.version == TlsVersion::tls1_2 ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(ctx, v);
    SSL_CTX_set_max_proto_version(ctx, v);
    if (o.version == TlsVersion::tls1_2)
        ASSERT_EQ(SSL_CTX_set_cipher_list(
                      ctx, o.tls12_cipher_override ? o.tls12_cipher_override : tls12_suite(o.cipher)),
                  1);
    else
        ASSERT_EQ(SSL_CTX_set_ciphersuites(ctx, tls13_suite(o.cipher)), 1);
}

SslCtxPtr server_ctx(const ContextOptions& o) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
    configure_common(ctx.get(), o);
    SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION);
    static const unsigned char sid_ctx[] = "session_keys_test";
    SSL_CTX_set_session_id_context(ctx.get(), sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_num_tickets(ctx.get(), static_cast<size_t>(o.tickets));
    if (o.tickets == 0) SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
    EXPECT_EQ(SSL_CTX_use_certificate(ctx.get(), test_cert().cert.get()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey(ctx.get(), test_cert().key.get()), 1);
    if (o.read_ahead) SSL_CTX_set_read_ahead(ctx.get(), 1);
    if (o.capture) enable_key_capture(ctx.get());
    return ctx;
}

// Client side: counts the sessions (tickets) it receives and keeps the last one for resumption.
struct ClientState {
    int sessions = 0;
    SSL_SESSION* last = nullptr;
    ~ClientState() { SSL_SESSION_free(last); }
};

int on_new_session(SSL* ssl, SSL_SESSION* sess) {
    auto* st = static_cast<ClientState*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
    ++st->sessions;
    SSL_SESSION_free(st->last);
    st->last = sess;
    return 1;  // we keep the reference
}

SslCtxPtr client_ctx(const ContextOptions& o, ClientState* st) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    configure_common(ctx.get(), o);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);  // test peer: the certificate is not the point
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_set_app_data(ctx.get(), st);
    SSL_CTX_sess_set_new_cb(ctx.get(), on_new_session);
    return ctx;
}

struct Pair {
    SslPtr client;
    SslPtr server;
    BIO* server_end = nullptr;  // the server's transport end (owned by the server SSL)
};

Pair connect_pair(SSL_CTX* cctx, SSL_CTX* sctx) {
    Pair p;
    p.client.reset(SSL_new(cctx));
    p.server.reset(SSL_new(sctx));
    BIO* cb = nullptr;
    BIO* sb = nullptr;
    // Big buffers: a 20000-byte write is two full records and must not block.
    EXPECT_EQ(BIO_new_bio_pair(&cb, 1 << 20, &sb, 1 << 20), 1);
    SSL_set_bio(p.client.get(), cb, cb);
    SSL_set_bio(p.server.get(), sb, sb);
    p.server_end = sb;
    SSL_set_connect_state(p.client.get());
    SSL_set_accept_state(p.server.get());
    return p;
}


// Drives both handshakes to completion. `after_client_done` runs once, right after the client's
// handshake returned 1 and before the server's next step.
template <typename F>
bool handshake(Pair& p, F after_client_done) {
    bool c_done = false, s_done = false, hook_ran = false;
    for (int i = 0; i < 50 && !(c_done && s_done); ++i) {
        if (!c_done) {
            const int rc = SSL_do_handshake(p.client.get());
            if (rc == 1)
                c_done = true;
            else if (!would_block(p.client.get(), rc))
                return false;
        }
        if (c_done && !hook_ran) {
            hook_ran = true;
            after_client_done();
        }
        if (!s_done) {
            const int rc = SSL_do_handshake(p.server.get());
            if (rc == 1)
                s_done = true;
            else if (!would_block(p.server.get(), rc))
                return false;
        }
    }
    return c_done && s_done;
}

bool handshake(Pair& p) {
    return handshake(p, [] {});
}

// ---------------------------------------------------------------------------------------------
// Record helpers over crypto::ktls_reference.


std::vector<Bytes> split_records(const Bytes& wire) {
    std::vector<Bytes> recs;
    size_t off = 0;
    while (off < wire.size()) {
        const size_t n = ktls_reference::record_size(std::span<const uint8_t>(wire).subspan(off));
        if (n == 0 || off + n > wire.size()) {
            ADD_FAILURE() << "truncated record at offset " << off;
            break;
        }
        recs.emplace_back(wire.begin() + off, wire.begin() + off + n);
        off += n;
    }
    return recs;
}

// ktls_reference takes a 12-byte IV; TLS 1.2 AES-GCM keys carry the 4-byte salt, followed here by the
// explicit nonce we put in sealed records (the sequence number, as OpenSSL does; opening reads the
// explicit nonce from the record).

Bytes message(size_t n, uint8_t seed) {
    Bytes m(n);
    for (size_t i = 0; i < n; ++i) m[i] = static_cast<uint8_t>(seed + i * 31);
    return m;
}

// Client's OpenSSL writes `msgs`; every record on the wire must open with `rx` from rx.seq onwards.
// Returns the number of records consumed.
uint64_t check_client_to_server(Pair& p, const DirectionKeys& rx, uint64_t first_seq,
                                const std::vector<Bytes>& msgs) {
    Bytes expected;
    for (const auto& m : msgs) {
        EXPECT_EQ(SSL_write(p.client.get(), m.data(), static_cast<int>(m.size())),
                  static_cast<int>(m.size()));
        expected.insert(expected.end(), m.begin(), m.end());
    }
    const auto recs = split_records(drain(p.server_end));
    EXPECT_GE(recs.size(), msgs.size());
    Bytes got;
    uint64_t seq = first_seq;
    for (const auto& r : recs) {
        auto o =
            ktls_reference::open_record(rx.version, rx.cipher, rx.key.view(), reference_iv(rx, 0), seq++, r);
        EXPECT_TRUE(o) << "record " << (seq - 1) << ": " << (o ? "" : o.error().message());
        if (!o) break;
        EXPECT_EQ(o->type, kRecordApplicationData);
        got.insert(got.end(), o->plaintext.begin(), o->plaintext.end());
    }
    EXPECT_EQ(got, expected);
    return recs.size();
}

// We seal `msgs` with `tx` from `first_seq`; the client's OpenSSL must read exactly them.
void check_server_to_client(Pair& p, const DirectionKeys& tx, uint64_t first_seq,
                            const std::vector<Bytes>& msgs, const Bytes& prefix_records = {}) {
    Bytes wire = prefix_records;
    Bytes expected;
    uint64_t seq = first_seq;
    for (const auto& m : msgs) {
        auto rec = ktls_reference::seal_record(tx.version, tx.cipher, tx.key.view(), reference_iv(tx, seq),
                                               seq, kRecordApplicationData, m);
        ASSERT_TRUE(rec) << rec.error().message();
        ++seq;
        wire.insert(wire.end(), rec->begin(), rec->end());
        expected.insert(expected.end(), m.begin(), m.end());
    }
    ASSERT_EQ(BIO_write(p.server_end, wire.data(), static_cast<int>(wire.size())),
              static_cast<int>(wire.size()));
    Bytes got(expected.size() + 100);
    size_t have = 0;
    while (have < expected.size()) {
        const int n = SSL_read(p.client.get(), got.data() + have, static_cast<int>(got.size() - have));
        if (n <= 0) {
            ADD_FAILURE() << "client SSL_read failed: SSL_get_error " << SSL_get_error(p.client.get(), n)
                          << " " << ERR_reason_error_string(ERR_peek_last_error());
            ERR_clear_error();
            return;
        }
        have += static_cast<size_t>(n);
    }
    got.resize(have);
    EXPECT_EQ(got, expected);
}

// Client SSL_read with nothing for it but post-handshake messages (NewSessionTicket): consumes them.
void client_reads_pending_handshake(Pair& p) {
    uint8_t b[16];
    const int n = SSL_read(p.client.get(), b, sizeof b);
    EXPECT_EQ(n, -1);
    EXPECT_EQ(SSL_get_error(p.client.get(), n), SSL_ERROR_WANT_READ);
}

// ---------------------------------------------------------------------------------------------

using Param = std::tuple<TlsVersion, Cipher, int>;

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
    const auto [v, c, t] = info.param;
    std::string s = v == TlsVersion::tls1_2 ? "TLS12_" : "TLS13_";
    s += c == Cipher::aes_128_gcm ? "AES128GCM" : c == Cipher::aes_256_gcm ? "AES256GCM" : "CHACHA20";
    s += "_tickets" + std::to_string(t);
    return s;
}

class SessionKeysDifferential : public ::testing::TestWithParam<Param> {
protected:
    ContextOptions opts() const {
        ContextOptions o;
        std::tie(o.version, o.cipher, o.tickets) = GetParam();
        return o;
    }
};

TEST_P(SessionKeysDifferential, KeysAndSequenceNumbersMatchOpenSsl) {
    const ContextOptions o = opts();
    const bool tls13 = o.version == TlsVersion::tls1_3;
    ClientState cs;
    auto sctx = server_ctx(o);
    auto cctx = client_ctx(o, &cs);
    Pair p = connect_pair(cctx.get(), sctx.get());
    ASSERT_TRUE(handshake(p));
    EXPECT_FALSE(has_buffered_input(p.server.get()));

    auto keys = take_session_keys(p.server.get());
    ASSERT_TRUE(keys) << keys.error().message();
    SessionKeys& k = *keys;
    for (const DirectionKeys* d : {&k.rx, &k.tx}) {
        EXPECT_EQ(d->version, o.version);
        EXPECT_EQ(d->cipher, o.cipher);
        EXPECT_EQ(d->key.size(), ktls_key_size(o.cipher));
        const bool salt_only = !tls13 && o.cipher != Cipher::chacha20_poly1305;
        EXPECT_EQ(d->iv.size(), salt_only ? kKtlsTls12GcmSaltSize : kKtlsIvSize);
    }
    // TLS 1.2: the Finished was record 0 under the new keys in each direction. TLS 1.3: the client's
    // Finished is under its handshake key; our NewSessionTickets are the first records of our key.
    EXPECT_EQ(k.rx.seq, tls13 ? 0u : 1u);
    EXPECT_EQ(k.tx.seq, tls13 ? static_cast<uint64_t>(o.tickets) : 1u);
    EXPECT_EQ(k.rx_secret.size(), tls13 ? tls13_hash_size(o.cipher) : 0u);
    EXPECT_EQ(k.tx_secret.size(), tls13 ? tls13_hash_size(o.cipher) : 0u);

    // (1) client → server, several records including one message split over two records.
    const std::vector<Bytes> up{message(5, 1), message(1000, 2), message(20000, 3), message(1, 4)};
    const uint64_t used = check_client_to_server(p, k.rx, k.rx.seq, up);
    EXPECT_EQ(used, 5u);

    // (2) server → client. In TLS 1.3 the tickets are ahead of our records: let the client consume
    // them first and check it really got them (so tx.seq == 2 was not a coincidence).
    if (tls13) {
        client_reads_pending_handshake(p);
        EXPECT_EQ(cs.sessions, o.tickets);
    } else {
        // TLS 1.2: at most one ticket, sent before the server's CCS: it does not move tx.seq.
        ASSERT_NE(cs.last, nullptr);
        EXPECT_EQ(SSL_SESSION_has_ticket(cs.last), o.tickets == 0 ? 0 : 1);
    }
    const std::vector<Bytes> down{message(7, 9), message(16384, 10), message(300, 11)};
    check_server_to_client(p, k.tx, k.tx.seq, down);

    // One shot.
    auto again = take_session_keys(p.server.get());
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, EALREADY);
}

INSTANTIATE_TEST_SUITE_P(All, SessionKeysDifferential,
                         ::testing::Combine(::testing::Values(TlsVersion::tls1_2, TlsVersion::tls1_3),
                                            ::testing::Values(Cipher::aes_128_gcm, Cipher::aes_256_gcm,
                                                              Cipher::chacha20_poly1305),
                                            ::testing::Values(0, 2)),
                         param_name);

// ---------------------------------------------------------------------------------------------
// Resumed (abbreviated / PSK) handshakes: TLS 1.2 by ticket and by session ID, TLS 1.3 by ticket.

std::vector<Param> resumption_params() {
    std::vector<Param> out;
    for (Cipher c : {Cipher::aes_128_gcm, Cipher::aes_256_gcm, Cipher::chacha20_poly1305}) {
        out.emplace_back(TlsVersion::tls1_2, c, 0);  // session ID (server cache)
        out.emplace_back(TlsVersion::tls1_2, c, 2);  // session ticket
        out.emplace_back(TlsVersion::tls1_3, c, 2);  // PSK from a NewSessionTicket
    }
    return out;
}

class SessionKeysResumption : public SessionKeysDifferential {};

TEST_P(SessionKeysResumption, ResumedHandshake) {
    const ContextOptions o = opts();
    ClientState cs;
    auto sctx = server_ctx(o);
    auto cctx = client_ctx(o, &cs);
    {
        Pair first = connect_pair(cctx.get(), sctx.get());
        ASSERT_TRUE(handshake(first));
        if (o.version == TlsVersion::tls1_3) client_reads_pending_handshake(first);
        ASSERT_NE(cs.last, nullptr);
        // A connection freed without shutdown marks its session not resumable: say it ended cleanly.
        SSL_set_shutdown(first.client.get(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_set_shutdown(first.server.get(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    }
    Pair p = connect_pair(cctx.get(), sctx.get());
    ASSERT_EQ(SSL_set_session(p.client.get(), cs.last), 1);
    ASSERT_TRUE(handshake(p));
    ASSERT_EQ(SSL_session_reused(p.server.get()), 1);
    auto keys = take_session_keys(p.server.get());
    ASSERT_TRUE(keys) << keys.error().message();
    // Abbreviated TLS 1.2: the server's CCS+Finished come first, the client's last: still 1 and 1.
    EXPECT_EQ(keys->rx.seq, o.version == TlsVersion::tls1_3 ? 0u : 1u);
    check_client_to_server(p, keys->rx, keys->rx.seq, {message(100, 5), message(200, 6)});
    if (o.version == TlsVersion::tls1_3) {
        // OpenSSL 3.0 sends one ticket (not num_tickets) after a resumption: the count, not the
        // configuration, is what matters — the same number of records the client received.
        const int before = cs.sessions;
        client_reads_pending_handshake(p);
        EXPECT_GE(cs.sessions - before, 1);
        EXPECT_EQ(keys->tx.seq, static_cast<uint64_t>(cs.sessions - before));
    } else {
        EXPECT_EQ(keys->tx.seq, 1u);
    }
    check_server_to_client(p, keys->tx, keys->tx.seq, {message(50, 7), message(60, 8)});
}

INSTANTIATE_TEST_SUITE_P(All, SessionKeysResumption, ::testing::ValuesIn(resumption_params()), param_name);

// ---------------------------------------------------------------------------------------------
// TLS 1.3 KeyUpdate with the secrets SessionKeys hands out.

class SessionKeysKeyUpdate : public ::testing::TestWithParam<Cipher> {};

TEST_P(SessionKeysKeyUpdate, NextSecretsFollowOpenSsl) {
    ContextOptions o;
    o.version = TlsVersion::tls1_3;
    o.cipher = GetParam();
    ClientState cs;
    auto sctx = server_ctx(o);
    auto cctx = client_ctx(o, &cs);
    Pair p = connect_pair(cctx.get(), sctx.get());
    ASSERT_TRUE(handshake(p));
    auto keys = take_session_keys(p.server.get());
    ASSERT_TRUE(keys) << keys.error().message();
    SessionKeys& k = *keys;

    // Client updates its sending key: KeyUpdate under the old key, then data under the next one.
    uint64_t rx_seq = k.rx.seq + check_client_to_server(p, k.rx, k.rx.seq, {message(10, 1)});
    ASSERT_EQ(SSL_key_update(p.client.get(), SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    const Bytes after = message(77, 2);
    ASSERT_EQ(SSL_write(p.client.get(), after.data(), static_cast<int>(after.size())), 77);
    const auto recs = split_records(drain(p.server_end));
    ASSERT_EQ(recs.size(), 2u);
    auto ku = ktls_reference::open_record(k.rx.version, k.rx.cipher, k.rx.key.view(), reference_iv(k.rx, 0),
                                          rx_seq, recs[0]);
    ASSERT_TRUE(ku) << ku.error().message();
    EXPECT_EQ(ku->type, kRecordHandshake);
    EXPECT_EQ(ku->plaintext, (Bytes{SSL3_MT_KEY_UPDATE, 0, 0, 1, SSL_KEY_UPDATE_NOT_REQUESTED}));
    auto rx_next = tls13_next_traffic_secret(o.cipher, k.rx_secret.view());
    ASSERT_TRUE(rx_next);
    auto rx1 = tls13_traffic_keys(o.cipher, rx_next->view());
    ASSERT_TRUE(rx1);
    auto data = ktls_reference::open_record(rx1->version, rx1->cipher, rx1->key.view(), reference_iv(*rx1, 0),
                                            0, recs[1]);
    ASSERT_TRUE(data) << data.error().message();
    EXPECT_EQ(data->plaintext, after);

    // We update ours: seal a KeyUpdate under the current key, then data under the next one.
    client_reads_pending_handshake(p);  // tickets
    const Bytes ku_msg{SSL3_MT_KEY_UPDATE, 0, 0, 1, SSL_KEY_UPDATE_NOT_REQUESTED};
    auto ku_rec = ktls_reference::seal_record(k.tx.version, k.tx.cipher, k.tx.key.view(),
                                              reference_iv(k.tx, 0), k.tx.seq, kRecordHandshake, ku_msg);
    ASSERT_TRUE(ku_rec);
    auto tx_next = tls13_next_traffic_secret(o.cipher, k.tx_secret.view());
    ASSERT_TRUE(tx_next);
    auto tx1 = tls13_traffic_keys(o.cipher, tx_next->view());
    ASSERT_TRUE(tx1);
    check_server_to_client(p, *tx1, 0, {message(123, 3), message(4, 4)}, *ku_rec);
}

// The kernel path's KeyUpdate bookkeeping (KtlsKeyUpdates) against OpenSSL, over two client
// updates: the first asks for ours (update_requested), the second does not. Each KeyUpdate record
// the client's OpenSSL writes, once opened, goes through on_client_handshake; the client's next
// record must open with the keys it returns, at sequence 0. Our answer (the KeyUpdate record it
// prescribes under the current TX key, then data under next_tx_keys()) must be read by the client.
TEST_P(SessionKeysKeyUpdate, KtlsKeyUpdatesFollowOpenSsl) {
    ContextOptions o;
    o.version = TlsVersion::tls1_3;
    o.cipher = GetParam();
    ClientState cs;
    auto sctx = server_ctx(o);
    auto cctx = client_ctx(o, &cs);
    Pair p = connect_pair(cctx.get(), sctx.get());
    ASSERT_TRUE(handshake(p));
    auto keys = take_session_keys(p.server.get());
    ASSERT_TRUE(keys) << keys.error().message();
    SessionKeys& k = *keys;
    KtlsKeyUpdates updates(TlsVersion::tls1_3, o.cipher, std::move(k.rx_secret), std::move(k.tx_secret));

    DirectionKeys rx = std::move(k.rx);
    uint64_t rx_seq = rx.seq + check_client_to_server(p, rx, rx.seq, {message(10, 1)});
    const auto now = KtlsKeyUpdates::Clock::now();
    for (int round = 0; round < 2; ++round) {
        SCOPED_TRACE(round);
        const bool requested = round == 0;
        ASSERT_EQ(SSL_key_update(p.client.get(), requested ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED),
                  1);
        const Bytes after = message(40 + round, static_cast<uint8_t>(2 + round));
        ASSERT_EQ(SSL_write(p.client.get(), after.data(), static_cast<int>(after.size())),
                  static_cast<int>(after.size()));
        const auto recs = split_records(drain(p.server_end));
        ASSERT_EQ(recs.size(), 2u);
        auto ku = ktls_reference::open_record(rx.version, rx.cipher, rx.key.view(), reference_iv(rx, 0), rx_seq,
                                              recs[0]);
        ASSERT_TRUE(ku) << ku.error().message();
        ASSERT_EQ(ku->type, kRecordHandshake);
        const bool owed_before = updates.tx_update_owed();
        auto step = updates.on_client_handshake(ku->plaintext, now + std::chrono::seconds(round));
        ASSERT_EQ(step.refuse, nullptr) << step.detail;
        ASSERT_TRUE(step.next_rx);
        EXPECT_EQ(updates.tx_update_owed(), owed_before || requested);
        rx = std::move(*step.next_rx);
        rx_seq = 0;
        auto data = ktls_reference::open_record(rx.version, rx.cipher, rx.key.view(), reference_iv(rx, 0), rx_seq++,
                                                recs[1]);
        ASSERT_TRUE(data) << data.error().message();
        EXPECT_EQ(data->plaintext, after);
    }

    // Our KeyUpdate under the current TX key, then data under the next one.
    ASSERT_TRUE(updates.tx_update_owed());
    client_reads_pending_handshake(p);  // tickets
    const auto& msg = KtlsKeyUpdates::kKeyUpdateNotRequested;
    auto ku_rec = ktls_reference::seal_record(k.tx.version, k.tx.cipher, k.tx.key.view(), reference_iv(k.tx, 0),
                                              k.tx.seq, kRecordHandshake, Bytes(msg.begin(), msg.end()));
    ASSERT_TRUE(ku_rec);
    auto tx1 = updates.next_tx_keys();
    ASSERT_TRUE(tx1) << tx1.error().message();
    EXPECT_FALSE(updates.tx_update_owed());
    check_server_to_client(p, *tx1, 0, {message(123, 3), message(4, 4)}, *ku_rec);
}

INSTANTIATE_TEST_SUITE_P(AllCiphers, SessionKeysKeyUpdate,
                         ::testing::Values(Cipher::aes_128_gcm, Cipher::aes_256_gcm,
                                           Cipher::chacha20_poly1305));

// ---------------------------------------------------------------------------------------------
// Buffered input, refusals, SNI context switches.

TEST(SessionKeys, BufferedInputWhenClientDataArrivesWithItsFinished) {
    ContextOptions o;  // TLS 1.3: the client may send data right behind its Finished
    o.read_ahead = true;
    ClientState cs;
    auto sctx = server_ctx(o);
    auto cctx = client_ctx(o, &cs);
    Pair p = connect_pair(cctx.get(), sctx.get());
    const Bytes early = message(64, 1);
    ASSERT_TRUE(handshake(
        p, [&] { EXPECT_EQ(SSL_write(p.client.get(), early.data(), static_cast<int>(early.size())), 64); }));
    EXPECT_TRUE(has_buffered_input(p.server.get()));
    // The keys themselves are still right (the buffered record was not parsed: rx.seq 0), but the caller
    // must drain through OpenSSL or refuse the kernel path.
    auto keys = take_session_keys(p.server.get());
    ASSERT_TRUE(keys) << keys.error().message();
    EXPECT_EQ(keys->rx.seq, 0u);
}

TEST(SessionKeys, BufferedInputAfterServerPeekTls12) {
    ContextOptions o;
    o.version = TlsVersion::tls1_2;
    o.read_ahead = true;
    ClientState cs;
    auto sctx = server_ctx(o);
    auto cctx = client_ctx(o, &cs);
    Pair p = connect_pair(cctx.get(), sctx.get());
    ASSERT_TRUE(handshake(p));
    EXPECT_FALSE(has_buffered_input(p.server.get()));
    const Bytes m = message(32, 1);
    ASSERT_EQ(SSL_write(p.client.get(), m.data(), static_cast<int>(m.size())), 32);
    uint8_t b = 0;
    ASSERT_EQ(SSL_peek(p.server.get(), &b, 1), 1);
    EXPECT_TRUE(has_buffered_input(p.server.get()));
}

TEST(SessionKeys, NonAeadSuiteIsNotSupported) {
    ContextOptions o;
    o.version = TlsVersion::tls1_2;
    o.tls12_cipher_override = "ECDHE-ECDSA-AES128-SHA256";
    ClientState cs;
    auto sctx = server_ctx(o);
    auto cctx = client_ctx(o, &cs);
    Pair p = connect_pair(cctx.get(), sctx.get());
    ASSERT_TRUE(handshake(p));
    auto keys = take_session_keys(p.server.get());
    ASSERT_FALSE(keys);
    EXPECT_EQ(keys.error().code, ENOTSUP);
}

TEST(SessionKeys, RefusesClientsUnfinishedHandshakesAndMissingCapture) {
    ContextOptions o;
    ClientState cs;
    auto sctx = server_ctx(o);
    auto cctx = client_ctx(o, &cs);
    Pair p = connect_pair(cctx.get(), sctx.get());
    auto early = take_session_keys(p.server.get());
    ASSERT_FALSE(early);
    EXPECT_EQ(early.error().code, EINVAL);
    ASSERT_TRUE(handshake(p));
    auto client = take_session_keys(p.client.get());
    ASSERT_FALSE(client);
    EXPECT_EQ(client.error().code, EINVAL);

    o.capture = false;
    auto plain = server_ctx(o);
    Pair q = connect_pair(cctx.get(), plain.get());
    ASSERT_TRUE(handshake(q));
    auto none = take_session_keys(q.server.get());
    ASSERT_FALSE(none);
    EXPECT_EQ(none.error().code, ENOKEY);
}

// The proxy switches SSL_CTX on SNI (SSL_set_SSL_CTX). OpenSSL 3.0 calls the keylog callback of the
// context current when a secret is logged, and the message callback copied at SSL_new.
int switch_ctx(SSL* ssl, int*, void* arg) {
    SSL_set_SSL_CTX(ssl, static_cast<SSL_CTX*>(arg));
    return SSL_TLSEXT_ERR_OK;
}

class SessionKeysSni : public ::testing::TestWithParam<TlsVersion> {};

TEST_P(SessionKeysSni, SwitchedContextWithCapture) {
    ContextOptions o;
    o.version = GetParam();
    ClientState cs;
    auto first = server_ctx(o);
    auto second = server_ctx(o);
    SSL_CTX_set_tlsext_servername_callback(first.get(), switch_ctx);
    SSL_CTX_set_tlsext_servername_arg(first.get(), second.get());
    auto cctx = client_ctx(o, &cs);
    Pair p = connect_pair(cctx.get(), first.get());
    SSL_set_tlsext_host_name(p.client.get(), "b.example");
    ASSERT_TRUE(handshake(p));
    ASSERT_EQ(SSL_get_SSL_CTX(p.server.get()), second.get());
    auto keys = take_session_keys(p.server.get());
    ASSERT_TRUE(keys) << keys.error().message();
    check_client_to_server(p, keys->rx, keys->rx.seq, {message(40, 1)});
    if (o.version == TlsVersion::tls1_3) client_reads_pending_handshake(p);
    check_server_to_client(p, keys->tx, keys->tx.seq, {message(41, 2)});
}

TEST(SessionKeys, SwitchToContextWithoutCaptureFailsClosed) {
    ContextOptions o;
    ClientState cs;
    auto first = server_ctx(o);
    o.capture = false;
    auto second = server_ctx(o);
    SSL_CTX_set_tlsext_servername_callback(first.get(), switch_ctx);
    SSL_CTX_set_tlsext_servername_arg(first.get(), second.get());
    auto cctx = client_ctx(o, &cs);
    Pair p = connect_pair(cctx.get(), first.get());
    SSL_set_tlsext_host_name(p.client.get(), "b.example");
    ASSERT_TRUE(handshake(p));
    auto keys = take_session_keys(p.server.get());
    ASSERT_FALSE(keys);
    EXPECT_EQ(keys.error().code, ENOKEY);
}

INSTANTIATE_TEST_SUITE_P(Versions, SessionKeysSni, ::testing::Values(TlsVersion::tls1_2, TlsVersion::tls1_3));

}  // namespace
}  // namespace ztp::crypto
