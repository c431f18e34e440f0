// crypto/record_layer: ztproxy's own record layer against OpenSSL's. A client and a server SSL talk
// over an in-memory BIO pair in one thread (as in session_keys_test.cpp); after the server handshake
// the server's keys go to a RecordReader / RecordWriter, and
//   * records the client's OpenSSL writes must open in place with RecordReader (same bytes, nothing
//     outside the record touched);
//   * records RecordWriter seals must be read by the client's OpenSSL;
// parameterised over TLS {1.2, 1.3} × {AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305}. Plus KeyUpdate
// both ways, alerts, TLS 1.3 padding, tampering, truncation, sequence numbers, header validation, the
// post-handshake parser and the KeyUpdate limiter.
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "crypto/key_schedule.hpp"
#include "crypto/ktls_probe.hpp"
#include "crypto/ktls_sockopt.hpp"
#include "crypto/record_layer.hpp"
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
// A connected OpenSSL client/server pair (ECDSA P-256 self-signed certificate).



const char* suite(TlsVersion v, Cipher c) {
    const bool t13 = v == TlsVersion::tls1_3;
    switch (c) {
        case Cipher::aes_128_gcm: return t13 ? "TLS_AES_128_GCM_SHA256" : "ECDHE-ECDSA-AES128-GCM-SHA256";
        case Cipher::aes_256_gcm: return t13 ? "TLS_AES_256_GCM_SHA384" : "ECDHE-ECDSA-AES256-GCM-SHA384";
        case Cipher::chacha20_poly1305:
            return t13 ? "TLS_CHACHA20_POLY1305_SHA256" : "ECDHE-ECDSA-CHACHA20-POLY1305";
    }
    return "";
}

void configure(SSL_CTX* ctx, TlsVersion v, Cipher c) {
    const int pv = v == TlsVersion::tls1_2 ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(ctx, pv);
    SSL_CTX_set_max_proto_version(ctx, pv);
    if (v == TlsVersion::tls1_2)
        EXPECT_EQ(SSL_CTX_set_cipher_list(ctx, suite(v, c)), 1);
    else
        EXPECT_EQ(SSL_CTX_set_ciphersuites(ctx, suite(v, c)), 1);
}


SecretBytes clone(const SecretBytes& s) {
    SecretBytes c;
    EXPECT_TRUE(c.assign(s.view()));
    return c;
}

DirectionKeys clone(const DirectionKeys& k) {
    DirectionKeys c;
    c.version = k.version;
    c.cipher = k.cipher;
    c.key = clone(k.key);
    c.iv = clone(k.iv);
    c.seq = k.seq;
    return c;
}

// Client and server after the handshake, the server's keys handed to our reader and writer (copies
// kept for the reference implementation).
struct Live {
    SslCtxPtr sctx, cctx;
    SslPtr client, server;
    BIO* server_end = nullptr;  // the server's transport end (owned by the server SSL)
    DirectionKeys rx, tx;       // copies of what the reader / writer got
    SecretBytes rx_secret, tx_secret;
    std::optional<RecordReader> reader;
    std::optional<RecordWriter> writer;
};

struct LiveOptions {
    TlsVersion version = TlsVersion::tls1_3;
    Cipher cipher = Cipher::aes_128_gcm;
    int tickets = 2;
    size_t client_block_padding = 0;
    uint8_t client_max_fragment = 0;  // TLSEXT_max_fragment_length_* the client asks for (0: none)
};

std::unique_ptr<Live> start(const LiveOptions& o) {
    auto l = std::make_unique<Live>();
    l->sctx.reset(SSL_CTX_new(TLS_server_method()));
    configure(l->sctx.get(), o.version, o.cipher);
    SSL_CTX_set_options(l->sctx.get(), SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_num_tickets(l->sctx.get(), static_cast<size_t>(o.tickets));
    EXPECT_EQ(SSL_CTX_use_certificate(l->sctx.get(), test_cert().cert.get()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey(l->sctx.get(), test_cert().key.get()), 1);
    enable_key_capture(l->sctx.get());
    l->cctx.reset(SSL_CTX_new(TLS_client_method()));
    configure(l->cctx.get(), o.version, o.cipher);
    SSL_CTX_set_verify(l->cctx.get(), SSL_VERIFY_NONE, nullptr);
    if (o.client_block_padding) {
        EXPECT_EQ(SSL_CTX_set_block_padding(l->cctx.get(), o.client_block_padding), 1);
    }
    if (o.client_max_fragment) {
        EXPECT_EQ(SSL_CTX_set_tlsext_max_fragment_length(l->cctx.get(), o.client_max_fragment), 1);
    }

    l->client.reset(SSL_new(l->cctx.get()));
    l->server.reset(SSL_new(l->sctx.get()));
    BIO* cb = nullptr;
    BIO* sb = nullptr;
    EXPECT_EQ(BIO_new_bio_pair(&cb, 1 << 20, &sb, 1 << 20), 1);
    SSL_set_bio(l->client.get(), cb, cb);
    SSL_set_bio(l->server.get(), sb, sb);
    l->server_end = sb;
    SSL_set_connect_state(l->client.get());
    SSL_set_accept_state(l->server.get());
    bool c_done = false, s_done = false;
    for (int i = 0; i < 50 && !(c_done && s_done); ++i) {
        if (!c_done) {
            const int rc = SSL_do_handshake(l->client.get());
            if (rc == 1) c_done = true;
            else if (!would_block(l->client.get(), rc)) break;
        }
        if (!s_done) {
            const int rc = SSL_do_handshake(l->server.get());
            if (rc == 1) s_done = true;
            else if (!would_block(l->server.get(), rc)) break;
        }
    }
    if (!(c_done && s_done)) {
        ADD_FAILURE() << "handshake failed";
        return nullptr;
    }
    auto keys = take_session_keys(l->server.get());
    if (!keys) {
        ADD_FAILURE() << keys.error().message();
        return nullptr;
    }
    l->rx = clone(keys->rx);
    l->tx = clone(keys->tx);
    l->rx_secret = clone(keys->rx_secret);
    l->tx_secret = clone(keys->tx_secret);
    auto r = RecordReader::create(std::move(keys->rx), std::move(keys->rx_secret));
    auto w = RecordWriter::create(std::move(keys->tx), std::move(keys->tx_secret), keys->max_plaintext);
    if (!r || !w) {
        ADD_FAILURE() << "create: " << (r ? w.error().message() : r.error().message());
        return nullptr;
    }
    l->reader.emplace(std::move(*r));
    l->writer.emplace(std::move(*w));
    return l;
}


Bytes message(size_t n, uint8_t seed) {
    Bytes m(n);
    for (size_t i = 0; i < n; ++i) m[i] = static_cast<uint8_t>(seed + i * 31 + (i >> 8));
    return m;
}

// The reference implementation's 12-byte IV (salt || explicit nonce for TLS 1.2 AES-GCM).

struct Opened {
    ContentType type;
    Bytes plaintext;
};

// Opens every record in `wire` in place, in one buffer, checking each time that the bytes after the
// record (the following records) were not touched and that only the record's own span changed.
std::vector<Opened> open_all(RecordReader& reader, Bytes wire) {
    std::vector<Opened> out;
    size_t off = 0;
    while (off < wire.size()) {
        std::span<uint8_t> rest(wire.data() + off, wire.size() - off);
        auto need = reader.record_size(rest);
        if (!need) {
            ADD_FAILURE() << "record_size: " << need.error().message();
            break;
        }
        if (*need > rest.size()) {
            ADD_FAILURE() << "truncated record at " << off;
            break;
        }
        const Bytes before(wire.begin(), wire.end());
        auto o = reader.open_in_place(rest);
        if (!o) {
            ADD_FAILURE() << "open_in_place at " << off << ": " << o.error().message();
            break;
        }
        EXPECT_EQ(o->record_size, *need);
        EXPECT_LE(o->plaintext_offset + o->plaintext_size, o->record_size);
        EXPECT_TRUE(std::equal(before.begin(), before.begin() + static_cast<long>(off + 5), wire.begin()))
            << "header or earlier bytes modified";
        EXPECT_TRUE(std::equal(before.begin() + static_cast<long>(off + *need), before.end(),
                               wire.begin() + static_cast<long>(off + *need)))
            << "bytes after the record modified";
        out.push_back({o->type, Bytes(rest.begin() + static_cast<long>(o->plaintext_offset),
                                      rest.begin() + static_cast<long>(o->plaintext_offset + o->plaintext_size))});
        off += o->record_size;
    }
    return out;
}

// Seals `msg` with the writer into a buffer with exactly headroom + size + tailroom, checks the layout.
Bytes seal(RecordWriter& w, const Bytes& msg, ContentType type = ContentType::application_data) {
    Bytes buf(w.headroom() + msg.size() + w.tailroom() + 7, 0xEE);  // 7 canary bytes
    std::copy(msg.begin(), msg.end(), buf.begin() + static_cast<long>(w.headroom()));
    auto n = w.seal_in_place(buf, msg.size(), type);
    if (!n) {
        ADD_FAILURE() << "seal: " << n.error().message();
        return {};
    }
    EXPECT_EQ(*n, w.headroom() + msg.size() + w.tailroom());
    for (size_t i = *n; i < buf.size(); ++i) EXPECT_EQ(buf[i], 0xEE) << "seal wrote past the record";
    buf.resize(*n);
    return buf;
}

// Client SSL_read until `want` bytes arrived (or failure).
Bytes client_read(SSL* client, size_t want) {
    Bytes got(want + 64);
    size_t have = 0;
    while (have < want) {
        const int n = SSL_read(client, got.data() + have, static_cast<int>(got.size() - have));
        if (n <= 0) {
            ADD_FAILURE() << "client SSL_read: SSL_get_error " << SSL_get_error(client, n) << " "
                          << ERR_reason_error_string(ERR_peek_last_error());
            ERR_clear_error();
            break;
        }
        have += static_cast<size_t>(n);
    }
    got.resize(have);
    return got;
}

void to_client(Live& l, const Bytes& wire) {
    ASSERT_EQ(BIO_write(l.server_end, wire.data(), static_cast<int>(wire.size())), static_cast<int>(wire.size()));
}

std::vector<size_t> plaintext_sizes() {
    std::vector<size_t> s{0, 1, 100, 16383, 16384};
    for (size_t n = 2; n < 16383; n += 1361) s.push_back(n);  // coarse sweep
    return s;
}

// ---------------------------------------------------------------------------------------------

using Param = std::tuple<TlsVersion, Cipher>;

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
    const auto [v, c] = info.param;
    std::string s = v == TlsVersion::tls1_2 ? "TLS12_" : "TLS13_";
    s += c == Cipher::aes_128_gcm ? "AES128GCM" : c == Cipher::aes_256_gcm ? "AES256GCM" : "CHACHA20";
    return s;
}

class RecordLayerDifferential : public ::testing::TestWithParam<Param> {
protected:
    LiveOptions opts() const {
        LiveOptions o;
        std::tie(o.version, o.cipher) = GetParam();
        return o;
    }
    bool tls13() const { return std::get<0>(GetParam()) == TlsVersion::tls1_3; }
};

TEST_P(RecordLayerDifferential, ClientRecordsOpenInPlace) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    EXPECT_EQ(l->reader->seq(), tls13() ? 0u : 1u);
    for (size_t n : plaintext_sizes()) {
        if (n == 0) continue;  // below: OpenSSL's SSL_write never sends an empty record
        const Bytes m = message(n, static_cast<uint8_t>(n));
        ASSERT_EQ(SSL_write(l->client.get(), m.data(), static_cast<int>(n)), static_cast<int>(n));
        const uint64_t seq_before = l->reader->seq();
        auto opened = open_all(*l->reader, drain(l->server_end));
        ASSERT_EQ(opened.size(), 1u) << n;
        EXPECT_EQ(opened[0].type, ContentType::application_data);
        EXPECT_EQ(opened[0].plaintext, m) << n;
        EXPECT_EQ(l->reader->seq(), seq_before + 1);
    }
    // Several records in one buffer (a 40000-byte write is three records).
    const Bytes big = message(40000, 7);
    ASSERT_EQ(SSL_write(l->client.get(), big.data(), 40000), 40000);
    auto opened = open_all(*l->reader, drain(l->server_end));
    ASSERT_EQ(opened.size(), 3u);
    Bytes joined;
    for (auto& o : opened) joined.insert(joined.end(), o.plaintext.begin(), o.plaintext.end());
    EXPECT_EQ(joined, big);
    // An empty application data record, which a peer may legally send (RFC 8446 §5.1), sealed by the
    // reference (last: the client's OpenSSL does not know about the sequence number it takes).
    auto empty = ktls_reference::seal_record(l->rx.version, l->rx.cipher, l->rx.key.view(), reference_iv(l->rx, 99),
                                             l->reader->seq(), kRecordApplicationData, {});
    ASSERT_TRUE(empty);
    opened = open_all(*l->reader, *empty);
    ASSERT_EQ(opened.size(), 1u);
    EXPECT_EQ(opened[0].type, ContentType::application_data);
    EXPECT_TRUE(opened[0].plaintext.empty());
}

TEST_P(RecordLayerDifferential, WriterRecordsReadByOpenSsl) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    // Starts at the seq take_session_keys found: after our two NewSessionTickets in TLS 1.3.
    EXPECT_EQ(l->writer->seq(), tls13() ? 2u : 1u);
    EXPECT_EQ(l->writer->headroom(), 5u + (!tls13() && std::get<1>(GetParam()) != Cipher::chacha20_poly1305 ? 8 : 0));
    EXPECT_EQ(l->writer->tailroom(), 16u + (tls13() ? 1 : 0));
    for (size_t n : plaintext_sizes()) {
        const Bytes m = message(n, static_cast<uint8_t>(n + 3));
        Bytes wire = seal(*l->writer, m);
        ASSERT_FALSE(wire.empty());
        if (n == 0) {  // the client consumes the empty record silently: follow it with a marker
            const Bytes marker{0x42};
            const Bytes rec = seal(*l->writer, marker);
            wire.insert(wire.end(), rec.begin(), rec.end());
            to_client(*l, wire);
            EXPECT_EQ(client_read(l->client.get(), 1), marker);
        } else {
            to_client(*l, wire);
            EXPECT_EQ(client_read(l->client.get(), n), m) << n;
        }
    }
}

TEST_P(RecordLayerDifferential, SelfRoundTripWithTheSameKeys) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    auto r = RecordReader::create(clone(l->tx), clone(l->tx_secret));
    ASSERT_TRUE(r);
    for (size_t n : plaintext_sizes()) {
        for (ContentType t : {ContentType::application_data, ContentType::handshake}) {
            if (n == 0 && t != ContentType::application_data) continue;
            const Bytes m = message(n, 9);
            auto opened = open_all(*r, seal(*l->writer, m, t));
            ASSERT_EQ(opened.size(), 1u);
            EXPECT_EQ(opened[0].type, t);
            EXPECT_EQ(opened[0].plaintext, m);
        }
    }
    EXPECT_EQ(r->seq(), l->writer->seq());
}

TEST_P(RecordLayerDifferential, ClientCloseNotifyIsAnAlert) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    EXPECT_EQ(SSL_shutdown(l->client.get()), 0);  // sent ours, the peer's not received yet
    auto opened = open_all(*l->reader, drain(l->server_end));
    ASSERT_EQ(opened.size(), 1u);
    EXPECT_EQ(opened[0].type, ContentType::alert);
    auto a = parse_alert(opened[0].plaintext);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->level, kAlertWarning);
    EXPECT_EQ(a->description, kAlertCloseNotify);
}

TEST_P(RecordLayerDifferential, WriterCloseNotifyEndsTheClientsReads) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    Bytes out(64);
    auto n = l->writer->seal_alert(out, kAlertWarning, kAlertCloseNotify);
    ASSERT_TRUE(n) << n.error().message();
    EXPECT_EQ(*n, l->writer->headroom() + 2 + l->writer->tailroom());
    out.resize(*n);
    to_client(*l, out);
    uint8_t b[16];
    int rc = 0;
    for (int i = 0; i < 4; ++i) {  // TLS 1.3: tickets first (SSL_read may return WANT_READ after them)
        rc = SSL_read(l->client.get(), b, sizeof b);
        if (rc == 0 || SSL_get_error(l->client.get(), rc) != SSL_ERROR_WANT_READ) break;
    }
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(SSL_get_error(l->client.get(), rc), SSL_ERROR_ZERO_RETURN);
}

// Flip every bit of a record, one at a time: the reader must fail, poison itself, and either leave
// the buffer untouched (header rejected: nothing decrypted) or scrub the whole record (tag failed).
TEST_P(RecordLayerDifferential, EverySingleBitFlipIsRejected) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    const Bytes m = message(40, 1);
    ASSERT_EQ(SSL_write(l->client.get(), m.data(), 40), 40);
    const Bytes rec = drain(l->server_end);
    const uint64_t seq = l->reader->seq();
    // Trailing bytes, so a length flipped upwards still finds a "complete" record.
    Bytes tail(kRecordMaxSize, 0xA5);
    for (size_t bit = 0; bit < rec.size() * 8; ++bit) {
        Bytes buf = rec;
        buf.insert(buf.end(), tail.begin(), tail.end());
        buf[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
        const Bytes before = buf;
        DirectionKeys k = clone(l->rx);
        k.seq = seq;
        auto r = RecordReader::create(std::move(k), clone(l->rx_secret));
        ASSERT_TRUE(r);
        auto o = r->open_in_place(buf);
        ASSERT_FALSE(o) << "bit " << bit;
        EXPECT_TRUE(r->poisoned());
        if (o.error().code == EBADMSG) {
            const size_t span = 5 + (static_cast<size_t>(before[3]) << 8 | before[4]);
            for (size_t i = 0; i < span; ++i) ASSERT_EQ(buf[i], 0) << "bit " << bit << " byte " << i;
            EXPECT_TRUE(std::equal(buf.begin() + static_cast<long>(span), buf.end(),
                                   before.begin() + static_cast<long>(span)));
        } else {
            EXPECT_TRUE(o.error().code == EPROTO || o.error().code == EMSGSIZE) << o.error().message();
            EXPECT_EQ(buf, before) << "bit " << bit;
            EXPECT_LT(bit, 40u) << "only header bits may fail the header check";
        }
        // Poisoned: every later call fails, even with the genuine record.
        Bytes good = rec;
        auto again = r->open_in_place(good);
        ASSERT_FALSE(again);
        EXPECT_EQ(again.error().code, ENOTRECOVERABLE);
        EXPECT_FALSE(r->record_size(good));
    }
    // The untouched record still opens with a fresh reader.
    DirectionKeys k = clone(l->rx);
    k.seq = seq;
    auto r = RecordReader::create(std::move(k), clone(l->rx_secret));
    ASSERT_TRUE(r);
    auto opened = open_all(*r, rec);
    ASSERT_EQ(opened.size(), 1u);
    EXPECT_EQ(opened[0].plaintext, m);
}

// Every prefix of a record: "need more", nothing read past the (exactly sized, heap) span, nothing
// written, the reader still fine.
TEST_P(RecordLayerDifferential, TruncatedRecordNeedsMoreBytes) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    const Bytes m = message(300, 2);
    ASSERT_EQ(SSL_write(l->client.get(), m.data(), 300), 300);
    const Bytes rec = drain(l->server_end);
    for (size_t n = 0; n < rec.size(); ++n) {
        auto prefix = std::make_unique<uint8_t[]>(n + 1);  // +1: make_unique of 0 elements
        std::copy(rec.begin(), rec.begin() + static_cast<long>(n), prefix.get());
        std::span<uint8_t> s(prefix.get(), n);
        auto need = l->reader->record_size(s);
        ASSERT_TRUE(need);
        EXPECT_EQ(*need, n < 5 ? 5u : rec.size());
        auto o = l->reader->open_in_place(s);
        ASSERT_FALSE(o);
        EXPECT_EQ(o.error().code, EAGAIN);
        EXPECT_TRUE(std::equal(s.begin(), s.end(), rec.begin()));
        EXPECT_FALSE(l->reader->poisoned());
    }
    auto opened = open_all(*l->reader, rec);
    ASSERT_EQ(opened.size(), 1u);
    EXPECT_EQ(opened[0].plaintext, m);
}

TEST_P(RecordLayerDifferential, SequenceNumberExhaustionNeverWraps) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    DirectionKeys k = clone(l->tx);
    k.seq = UINT64_MAX - 1;
    auto w = RecordWriter::create(std::move(k), clone(l->tx_secret));
    k = clone(l->tx);
    k.seq = UINT64_MAX - 1;
    auto r = RecordReader::create(std::move(k), clone(l->tx_secret));
    ASSERT_TRUE(w && r);
    const Bytes m = message(10, 3);
    Bytes rec = seal(*w, m);
    ASSERT_FALSE(rec.empty());
    // Cross-check the last usable seq against the reference implementation.
    auto ref = ktls_reference::open_record(l->tx.version, l->tx.cipher, l->tx.key.view(), reference_iv(l->tx, 0),
                                           UINT64_MAX - 1, rec);
    ASSERT_TRUE(ref) << ref.error().message();
    EXPECT_EQ(ref->plaintext, m);
    EXPECT_EQ(w->seq(), UINT64_MAX);
    Bytes buf(64);
    auto n = w->seal_in_place(buf, 1, ContentType::application_data);
    ASSERT_FALSE(n);
    EXPECT_EQ(n.error().code, EOVERFLOW);
    EXPECT_TRUE(w->poisoned());

    auto opened = open_all(*r, rec);
    ASSERT_EQ(opened.size(), 1u);
    EXPECT_EQ(opened[0].plaintext, m);
    // A record at seq 2^64-1 (sealed by the reference) is refused: the reader would have to wrap.
    auto last = ktls_reference::seal_record(l->tx.version, l->tx.cipher, l->tx.key.view(), reference_iv(l->tx, 5),
                                            UINT64_MAX, kRecordApplicationData, m);
    ASSERT_TRUE(last);
    auto o = r->open_in_place(*last);
    ASSERT_FALSE(o);
    EXPECT_EQ(o.error().code, EOVERFLOW);
    EXPECT_TRUE(r->poisoned());
}

TEST_P(RecordLayerDifferential, HeaderValidation) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    const bool gcm12 = !tls13() && std::get<1>(GetParam()) != Cipher::chacha20_poly1305;
    const size_t min_len = 16 + (tls13() ? 1 : 0) + (gcm12 ? 8 : 0);
    const size_t max_len = 16384 + min_len;
    auto hdr = [](uint8_t type, uint8_t v0, uint8_t v1, size_t len) {
        return Bytes{type, v0, v1, static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len)};
    };
    RecordReader& r = *l->reader;
    auto code = [&](const Bytes& h) {
        auto n = r.record_size(h);
        return n ? 0 : n.error().code;
    };
    auto size = [&](const Bytes& h) {
        auto n = r.record_size(h);
        return n ? n.value() : 0;
    };
    EXPECT_EQ(size(Bytes{}), 5u);
    EXPECT_EQ(size(Bytes{23, 3, 3}), 5u);
    EXPECT_EQ(size(hdr(23, 3, 3, max_len)), 5 + max_len);
    EXPECT_EQ(size(hdr(23, 3, 3, min_len)), 5 + min_len);
    EXPECT_EQ(code(hdr(23, 3, 3, max_len + 1)), EMSGSIZE);
    EXPECT_EQ(code(hdr(23, 3, 3, 16384 + 256)), EMSGSIZE);
    EXPECT_EQ(code(hdr(23, 3, 3, 0xffff)), EMSGSIZE);
    EXPECT_EQ(code(hdr(23, 3, 3, min_len - 1)), EPROTO);
    EXPECT_EQ(code(hdr(23, 3, 3, 0)), EPROTO);
    EXPECT_EQ(code(hdr(23, 3, 1, 100)), EPROTO);
    EXPECT_EQ(code(hdr(23, 3, 4, 100)), EPROTO);
    EXPECT_EQ(code(hdr(23, 2, 3, 100)), EPROTO);
    EXPECT_EQ(code(hdr(20, 3, 3, 100)), EPROTO);  // change_cipher_spec after the handshake
    EXPECT_EQ(code(hdr(24, 3, 3, 100)), EPROTO);  // heartbeat
    EXPECT_EQ(code(hdr(0, 3, 3, 100)), EPROTO);
    EXPECT_EQ(code(hdr(21, 3, 3, 100)), tls13() ? EPROTO : 0);  // TLS 1.3: outer type is always 23
    EXPECT_EQ(code(hdr(22, 3, 3, 100)), tls13() ? EPROTO : 0);
    // The alert the peer is owed for each refused header.
    auto alert = [&](const Bytes& h) {
        uint8_t a = 0xff;
        EXPECT_FALSE(r.record_size(h, &a));
        return a;
    };
    EXPECT_EQ(alert(hdr(23, 3, 3, max_len + 1)), kAlertRecordOverflow);
    EXPECT_EQ(alert(hdr(23, 3, 3, 0x8000 | 100)), kAlertRecordOverflow);
    EXPECT_EQ(alert(hdr(23, 3, 3, min_len - 1)), kAlertBadRecordMac);
    EXPECT_EQ(alert(hdr(23, 3, 2, 100)), kAlertDecodeError);
    EXPECT_EQ(alert(hdr(23, 2, 3, 100)), kAlertDecodeError);
    EXPECT_EQ(alert(hdr(31, 3, 3, 100)), kAlertUnexpectedMessage);
    EXPECT_EQ(alert(hdr(20, 3, 3, 100)), kAlertUnexpectedMessage);
    if (tls13()) {
        EXPECT_EQ(alert(hdr(22, 3, 3, 100)), kAlertUnexpectedMessage);
    }
    // The same refusals by name (crypto/record_errors.hpp), which is what the relays act on.
    auto error = [&](const Bytes& h) {
        RecordError e = RecordError::count;
        EXPECT_FALSE(r.record_size(h, &e));
        return e;
    };
    EXPECT_EQ(error(hdr(20, 3, 3, 100)), RecordError::ccs_after_handshake);
    EXPECT_EQ(error(hdr(24, 3, 3, 100)), RecordError::unknown_record_type);
    EXPECT_EQ(error(hdr(23, 3, 1, 100)), RecordError::bad_record_version);
    EXPECT_EQ(error(hdr(23, 3, 3, min_len - 1)), RecordError::record_too_short);
    EXPECT_EQ(error(hdr(23, 3, 3, max_len + 1)), RecordError::plaintext_overflow);
    const size_t max_ciphertext = 16384 + (tls13() ? 256 : 2048);
    EXPECT_EQ(error(hdr(23, 3, 3, max_ciphertext)), RecordError::plaintext_overflow);
    EXPECT_EQ(error(hdr(23, 3, 3, max_ciphertext + 1)), RecordError::ciphertext_overflow);
    uint8_t untouched = 0xff;
    EXPECT_TRUE(r.record_size(hdr(23, 3, 3, 100), &untouched));
    EXPECT_EQ(untouched, 0xff) << "no alert for a valid header";
    EXPECT_FALSE(r.poisoned());  // record_size is a pure query
    Bytes bad = hdr(23, 3, 3, max_len + 1);
    bad.resize(5 + max_len + 1, 0);
    auto o = r.open_in_place(bad);
    ASSERT_FALSE(o);
    EXPECT_EQ(o.error().code, EMSGSIZE);
    EXPECT_TRUE(r.poisoned());
    EXPECT_EQ(r.failure(), RecordError::plaintext_overflow);
}

TEST_P(RecordLayerDifferential, AuthenticIllegalContentIsRejectedAndScrubbed) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    struct Case {
        uint8_t type;
        Bytes content;
        RecordError error;
    };
    const std::vector<Case> cases{
        {kRecordAlert, {1, 0, 0}, RecordError::malformed_alert},  // alert not exactly 2 bytes
        {kRecordAlert, {1}, RecordError::malformed_alert},
        {kRecordAlert, {}, RecordError::malformed_alert},  // empty alert
        {kRecordHandshake, {}, RecordError::empty_handshake_record},
        {kRecordChangeCipherSpec, {1}, RecordError::ccs_after_handshake},  // protected CCS (TLS 1.3)
        {24, {1, 0, 0}, RecordError::unknown_record_type}};                // heartbeat
    for (const auto& c : cases) {
        DirectionKeys k = clone(l->rx);
        auto r = RecordReader::create(std::move(k), clone(l->rx_secret));
        ASSERT_TRUE(r);
        auto rec = ktls_reference::seal_record(l->rx.version, l->rx.cipher, l->rx.key.view(), reference_iv(l->rx, 1),
                                               r->seq(), c.type, c.content);
        ASSERT_TRUE(rec);
        if (!tls13() && (c.type == kRecordChangeCipherSpec || c.type == 24)) {
            RecordError e = RecordError::count;
            EXPECT_FALSE(r->record_size(*rec, &e));  // refused at the header already
            EXPECT_EQ(e, c.error);
            continue;
        }
        Bytes buf = *rec;
        auto o = r->open_in_place(buf);
        ASSERT_FALSE(o) << int(c.type) << " " << c.content.size();
        EXPECT_EQ(o.error().code, EPROTO);
        EXPECT_EQ(buf, Bytes(buf.size(), 0));
        EXPECT_TRUE(r->poisoned());
        EXPECT_EQ(r->failure(), c.error) << int(c.type) << " " << c.content.size();
    }
}

INSTANTIATE_TEST_SUITE_P(All, RecordLayerDifferential,
                         ::testing::Combine(::testing::Values(TlsVersion::tls1_2, TlsVersion::tls1_3),
                                            ::testing::Values(Cipher::aes_128_gcm, Cipher::aes_256_gcm,
                                                              Cipher::chacha20_poly1305)),
                         param_name);

// ---------------------------------------------------------------------------------------------
// TLS 1.3 only: KeyUpdate both ways, padding, all-zero plaintext.

class RecordLayerTls13 : public ::testing::TestWithParam<Cipher> {
protected:
    LiveOptions opts() const {
        LiveOptions o;
        o.cipher = GetParam();
        return o;
    }
};

TEST_P(RecordLayerTls13, KeyUpdateBothDirections) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    PostHandshakeParser parser(TlsVersion::tls1_3);
    KeyUpdateLimiter limiter;

    // Client → us: KeyUpdate(update_requested) under the old key, then data under the next one.
    ASSERT_EQ(SSL_key_update(l->client.get(), SSL_KEY_UPDATE_REQUESTED), 1);
    const Bytes after = message(77, 2);
    ASSERT_EQ(SSL_write(l->client.get(), after.data(), 77), 77);
    Bytes wire = drain(l->server_end);
    std::span<uint8_t> rest(wire);
    auto ku = l->reader->open_in_place(rest);
    ASSERT_TRUE(ku) << ku.error().message();
    ASSERT_EQ(ku->type, ContentType::handshake);
    auto ev = parser.feed(rest.subspan(ku->plaintext_offset, ku->plaintext_size));
    ASSERT_TRUE(ev) << ev.error().message();
    EXPECT_TRUE(ev->key_update);
    EXPECT_TRUE(ev->update_requested);
    EXPECT_EQ(ev->tickets, 0u);
    EXPECT_TRUE(limiter.allow(l->reader->seq()));
    ASSERT_TRUE(l->reader->rekey());
    EXPECT_EQ(l->reader->seq(), 0u);
    auto opened = open_all(*l->reader, Bytes(rest.begin() + static_cast<long>(ku->record_size), rest.end()));
    ASSERT_EQ(opened.size(), 1u);
    EXPECT_EQ(opened[0].plaintext, after);
    ASSERT_TRUE(parser.on_other_record());

    // Us → client: the requested KeyUpdate, then data under our next key.
    Bytes out(64);
    auto n = l->writer->seal_key_update(out, false);
    ASSERT_TRUE(n) << n.error().message();
    EXPECT_EQ(l->writer->seq(), 0u);
    out.resize(*n);
    const Bytes down = message(500, 4);
    const Bytes rec = seal(*l->writer, down);
    out.insert(out.end(), rec.begin(), rec.end());
    to_client(*l, out);
    EXPECT_EQ(client_read(l->client.get(), down.size()), down);

    // A second round, and the client keeps writing under its next key.
    const Bytes more = message(1000, 5);
    ASSERT_EQ(SSL_write(l->client.get(), more.data(), 1000), 1000);
    opened = open_all(*l->reader, drain(l->server_end));
    ASSERT_EQ(opened.size(), 1u);
    EXPECT_EQ(opened[0].plaintext, more);
    n = l->writer->seal_key_update(out = Bytes(64), true);
    ASSERT_TRUE(n);
    out.resize(*n);
    to_client(*l, out);
    const Bytes down2 = message(20, 6);
    to_client(*l, seal(*l->writer, down2));
    EXPECT_EQ(client_read(l->client.get(), down2.size()), down2);
    // The client answers our update_requested with a KeyUpdate of its own, before its next data.
    ASSERT_EQ(SSL_write(l->client.get(), more.data(), 10), 10);
    wire = drain(l->server_end);
    rest = wire;
    ku = l->reader->open_in_place(rest);
    ASSERT_TRUE(ku);
    ASSERT_EQ(ku->type, ContentType::handshake);
    ev = parser.feed(rest.subspan(ku->plaintext_offset, ku->plaintext_size));
    ASSERT_TRUE(ev && ev->key_update);
    EXPECT_FALSE(ev->update_requested);
    EXPECT_FALSE(limiter.allow(l->reader->seq())) << "two records under the key: under the 64-record rule";
    ASSERT_TRUE(l->reader->rekey());
    opened = open_all(*l->reader, Bytes(rest.begin() + static_cast<long>(ku->record_size), rest.end()));
    ASSERT_EQ(opened.size(), 1u);
    EXPECT_EQ(opened[0].plaintext, Bytes(more.begin(), more.begin() + 10));
}

TEST_P(RecordLayerTls13, OldKeyNoLongerOpensAfterRekey) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    ASSERT_EQ(SSL_key_update(l->client.get(), SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    ASSERT_EQ(SSL_write(l->client.get(), "x", 1), 1);
    Bytes wire = drain(l->server_end);
    std::span<uint8_t> rest(wire);
    auto ku = l->reader->open_in_place(rest);
    ASSERT_TRUE(ku);
    // Forgetting rekey(): the next record does not authenticate under the old key.
    auto o = l->reader->open_in_place(rest.subspan(ku->record_size));
    ASSERT_FALSE(o);
    EXPECT_EQ(o.error().code, EBADMSG);
}

TEST_P(RecordLayerTls13, PaddedRecordsOpenToTheirContent) {
    LiveOptions o = opts();
    o.client_block_padding = 512;
    auto l = start(o);
    ASSERT_TRUE(l);
    for (size_t n : {1u, 100u, 510u, 511u, 512u, 4000u, 16384u}) {
        const Bytes m = message(n, 1);
        ASSERT_EQ(SSL_write(l->client.get(), m.data(), static_cast<int>(n)), static_cast<int>(n));
        const Bytes wire = drain(l->server_end);
        const size_t inner = wire.size() - 5 - 16;
        if (n + 1 <= 16384) {
            EXPECT_EQ(inner % 512, 0u) << "record was not padded: " << inner;
        }
        auto opened = open_all(*l->reader, wire);
        ASSERT_EQ(opened.size(), 1u);
        EXPECT_EQ(opened[0].type, ContentType::application_data);
        EXPECT_EQ(opened[0].plaintext, m);
    }
    EXPECT_EQ(SSL_shutdown(l->client.get()), 0);  // padded alert
    auto opened = open_all(*l->reader, drain(l->server_end));
    ASSERT_EQ(opened.size(), 1u);
    EXPECT_EQ(opened[0].type, ContentType::alert);
    EXPECT_EQ(opened[0].plaintext, (Bytes{1, 0}));
}

TEST_P(RecordLayerTls13, AllZeroPlaintextIsAnError) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    // Content type 0 followed by zero padding: the reference seals type 0 as the inner type byte.
    auto rec = ktls_reference::seal_record(l->rx.version, l->rx.cipher, l->rx.key.view(), reference_iv(l->rx, 0),
                                           l->reader->seq(), 0, Bytes(20, 0));
    ASSERT_TRUE(rec);
    Bytes buf = *rec;
    auto o = l->reader->open_in_place(buf);
    ASSERT_FALSE(o);
    EXPECT_EQ(o.error().code, EPROTO);
    EXPECT_EQ(buf, Bytes(buf.size(), 0));
    EXPECT_TRUE(l->reader->poisoned());
    ASSERT_EQ(l->reader->failure(), RecordError::zero_inner_type);
    EXPECT_EQ(describe(*l->reader->failure()).alert, kAlertUnexpectedMessage);
}

// Zero-length and padding-only application data are legal (RFC 8446 §5.1, §5.4): they open to
// nothing, and a record after them still opens.
TEST_P(RecordLayerTls13, EmptyAndPaddingOnlyApplicationDataAreNoError) {
    auto l = start(opts());
    ASSERT_TRUE(l);
    // The reference appends the inner type byte after the plaintext: an empty record is type 23 with
    // nothing before it; a padding-only one is "23, zeros" sealed with type byte 0 behind it.
    struct Rec {
        uint8_t type;
        Bytes plaintext;
    };
    const Rec recs[] = {{kRecordApplicationData, {}}, {0, {23, 0, 0, 0, 0, 0, 0}}, {kRecordApplicationData, {7, 7}}};
    Bytes wire;
    uint64_t seq = l->reader->seq();
    for (const auto& r : recs) {
        auto rec = ktls_reference::seal_record(l->rx.version, l->rx.cipher, l->rx.key.view(), reference_iv(l->rx, 0),
                                               seq++, r.type, r.plaintext);
        ASSERT_TRUE(rec);
        wire.insert(wire.end(), rec->begin(), rec->end());
    }
    auto opened = open_all(*l->reader, wire);
    ASSERT_EQ(opened.size(), 3u);
    for (const auto& o : opened) EXPECT_EQ(o.type, ContentType::application_data);
    EXPECT_TRUE(opened[0].plaintext.empty());
    EXPECT_TRUE(opened[1].plaintext.empty());
    EXPECT_EQ(opened[2].plaintext, (Bytes{7, 7}));
    EXPECT_FALSE(l->reader->poisoned());
    EXPECT_FALSE(l->reader->failure());
}

INSTANTIATE_TEST_SUITE_P(AllCiphers, RecordLayerTls13,
                         ::testing::Values(Cipher::aes_128_gcm, Cipher::aes_256_gcm, Cipher::chacha20_poly1305));

// ---------------------------------------------------------------------------------------------
// API misuse and edge cases without an OpenSSL peer.

DirectionKeys synthetic(TlsVersion v, Cipher c) {
    DirectionKeys k;
    k.version = v;
    k.cipher = c;
    Bytes key(ktls_key_size(c), 0x11), iv(v == TlsVersion::tls1_2 && c != Cipher::chacha20_poly1305 ? 4 : 12, 0x22);
    EXPECT_TRUE(k.key.assign(key));
    EXPECT_TRUE(k.iv.assign(iv));
    return k;
}

TEST(RecordLayer, RejectsWrongKeyMaterial) {
    auto k = synthetic(TlsVersion::tls1_3, Cipher::aes_128_gcm);
    EXPECT_TRUE(k.key.assign(Bytes(32, 1)));  // AES-256 key for AES-128
    auto r = RecordReader::create(std::move(k), {});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EINVAL);
    k = synthetic(TlsVersion::tls1_2, Cipher::aes_256_gcm);
    EXPECT_TRUE(k.iv.assign(Bytes(12, 1)));  // TLS 1.2 GCM carries the 4-byte salt
    EXPECT_FALSE(RecordWriter::create(std::move(k), {}));
    SecretBytes s;
    EXPECT_TRUE(s.assign(Bytes(32, 1)));
    EXPECT_FALSE(RecordReader::create(synthetic(TlsVersion::tls1_2, Cipher::aes_128_gcm), std::move(s)));
    EXPECT_TRUE(s.assign(Bytes(32, 1)));  // SHA-384 suite needs 48 bytes
    EXPECT_FALSE(RecordReader::create(synthetic(TlsVersion::tls1_3, Cipher::aes_256_gcm), std::move(s)));
}

TEST(RecordLayer, RekeyNeedsTls13AndASecret) {
    auto r12 = RecordReader::create(synthetic(TlsVersion::tls1_2, Cipher::chacha20_poly1305), {});
    ASSERT_TRUE(r12);
    EXPECT_EQ(r12->rekey().error().code, ENOTSUP);
    auto w12 = RecordWriter::create(synthetic(TlsVersion::tls1_2, Cipher::aes_128_gcm), {});
    ASSERT_TRUE(w12);
    Bytes out(64);
    EXPECT_EQ(w12->seal_key_update(out, false).error().code, ENOTSUP);
    EXPECT_FALSE(w12->key_update_due());
    EXPECT_FALSE(r12->poisoned() || w12->poisoned());  // misuse only: nothing happened
    auto w13 = RecordWriter::create(synthetic(TlsVersion::tls1_3, Cipher::aes_128_gcm), {});
    ASSERT_TRUE(w13);
    EXPECT_EQ(w13->seal_key_update(out, false).error().code, ENOKEY);
    EXPECT_EQ(w13->seq(), 0u) << "no sequence number used up by a KeyUpdate we cannot follow";
    auto r13 = RecordReader::create(synthetic(TlsVersion::tls1_3, Cipher::aes_128_gcm), {});
    ASSERT_TRUE(r13);
    EXPECT_EQ(r13->rekey().error().code, ENOKEY);
    EXPECT_TRUE(r13->poisoned());
}

TEST(RecordLayer, EmptyRecordRunsAreBounded) {
    for (TlsVersion v : {TlsVersion::tls1_2, TlsVersion::tls1_3}) {
        auto w = RecordWriter::create(synthetic(v, Cipher::aes_256_gcm), {});
        auto r = RecordReader::create(synthetic(v, Cipher::aes_256_gcm), {});
        ASSERT_TRUE(w && r);
        Bytes one{1};
        auto open_one = [&](const Bytes& m) {
            Bytes rec = seal(*w, m);
            return r->open_in_place(rec);
        };
        for (uint32_t i = 0; i < RecordReader::kMaxEmptyRecordsInARow; ++i) ASSERT_TRUE(open_one({}));
        ASSERT_TRUE(open_one(one));  // a non-empty record resets the run
        for (uint32_t i = 0; i < RecordReader::kMaxEmptyRecordsInARow; ++i) ASSERT_TRUE(open_one({}));
        auto o = open_one({});
        ASSERT_FALSE(o);
        EXPECT_EQ(o.error().code, EPROTO);
        EXPECT_TRUE(r->poisoned());
    }
}

TEST(RecordLayer, WriterArgumentChecks) {
    auto w = RecordWriter::create(synthetic(TlsVersion::tls1_3, Cipher::aes_128_gcm), {});
    ASSERT_TRUE(w);
    Bytes buf(kRecordMaxSize + 10);
    EXPECT_EQ(w->seal_in_place(buf, 16385, ContentType::application_data).error().code, EMSGSIZE);
    EXPECT_EQ(w->seal_in_place(std::span<uint8_t>(buf).first(5 + 10 + 16), 10, ContentType::application_data)
                  .error()
                  .code,
              EINVAL);  // no room for the inner type
    EXPECT_EQ(w->seal_in_place(buf, 0, ContentType::handshake).error().code, EINVAL);
    EXPECT_EQ(w->seal_in_place(buf, 3, ContentType::alert).error().code, EINVAL);
    EXPECT_EQ(w->seal_in_place(buf, 1, ContentType::change_cipher_spec).error().code, EINVAL);
    EXPECT_EQ(w->seal_alert(std::span<uint8_t>(buf).first(18), 2, 40).error().code, EINVAL);
    EXPECT_FALSE(w->poisoned());  // argument errors do not poison
    EXPECT_EQ(w->seq(), 0u);
    auto n = w->seal_in_place(std::span<uint8_t>(buf).first(5 + 16384 + 17), 16384, ContentType::application_data);
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 5u + 16384 + 17);
    EXPECT_EQ(w->seq(), 1u);

    auto k = synthetic(TlsVersion::tls1_3, Cipher::aes_128_gcm);
    k.seq = RecordWriter::kKeyUpdateDueAt;
    auto due = RecordWriter::create(std::move(k), {});
    ASSERT_TRUE(due);
    EXPECT_TRUE(due->key_update_due());
}

// RFC 6066 max_fragment_length: the writer never seals more plaintext per record than the limit.
TEST(RecordLayer, WriterHonoursTheRecordLimit) {
    for (auto v : {TlsVersion::tls1_2, TlsVersion::tls1_3}) {
        for (size_t limit : {size_t{512}, size_t{1024}, size_t{2048}, size_t{4096}}) {
            SCOPED_TRACE(std::to_string(limit));
            auto w = RecordWriter::create(synthetic(v, Cipher::aes_128_gcm), {}, limit);
            ASSERT_TRUE(w);
            EXPECT_EQ(w->max_plaintext(), limit);
            Bytes buf(kRecordMaxSize);
            EXPECT_EQ(w->seal_in_place(buf, limit + 1, ContentType::application_data).error().code, EMSGSIZE);
            EXPECT_FALSE(w->poisoned());
            auto n = w->seal_in_place(buf, limit, ContentType::application_data);
            ASSERT_TRUE(n);
            EXPECT_EQ(*n, w->headroom() + limit + w->tailroom());
        }
    }
    EXPECT_EQ(RecordWriter::create(synthetic(TlsVersion::tls1_3, Cipher::aes_128_gcm), {}, 0).error().code, EINVAL);
    EXPECT_EQ(RecordWriter::create(synthetic(TlsVersion::tls1_3, Cipher::aes_128_gcm), {}, 16385).error().code, EINVAL);
    auto unlimited = RecordWriter::create(synthetic(TlsVersion::tls1_3, Cipher::aes_128_gcm), {});
    ASSERT_TRUE(unlimited);
    EXPECT_EQ(unlimited->max_plaintext(), kRecordMaxPlaintext);
}

// A client that negotiates max_fragment_length: take_session_keys reports the limit, and records
// the writer seals at it are read by the client's OpenSSL (which refuses longer ones).
TEST(RecordLayer, NegotiatedMaxFragmentLengthReachesTheWriter) {
    const std::pair<uint8_t, size_t> modes[] = {{TLSEXT_max_fragment_length_512, 512},
                                                {TLSEXT_max_fragment_length_1024, 1024},
                                                {TLSEXT_max_fragment_length_2048, 2048},
                                                {TLSEXT_max_fragment_length_4096, 4096}};
    for (auto v : {TlsVersion::tls1_2, TlsVersion::tls1_3}) {
        for (const auto& [mode, limit] : modes) {
            SCOPED_TRACE(std::to_string(limit));
            LiveOptions o;
            o.version = v;
            o.client_max_fragment = mode;
            auto l = start(o);
            ASSERT_TRUE(l);
            EXPECT_EQ(negotiated_max_fragment_length(l->server.get()), limit);
            ASSERT_EQ(l->writer->max_plaintext(), limit);
            const Bytes m = message(limit, 3);
            to_client(*l, seal(*l->writer, m));
            EXPECT_EQ(client_read(l->client.get(), m.size()), m);
        }
    }
    auto plain = start(LiveOptions{});
    ASSERT_TRUE(plain);
    EXPECT_EQ(negotiated_max_fragment_length(plain->server.get()), kRecordMaxPlaintext);
    EXPECT_EQ(plain->writer->max_plaintext(), kRecordMaxPlaintext);
}

TEST(RecordLayer, MovedFromObjectsFail) {
    auto r = RecordReader::create(synthetic(TlsVersion::tls1_3, Cipher::chacha20_poly1305), {});
    ASSERT_TRUE(r);
    RecordReader moved = std::move(*r);
    EXPECT_FALSE(moved.poisoned());
    EXPECT_TRUE(r->poisoned());
    Bytes b(100);
    EXPECT_EQ(r->open_in_place(b).error().code, ENOTRECOVERABLE);
}

// ---------------------------------------------------------------------------------------------
// PostHandshakeParser

Bytes key_update_msg(uint8_t req) { return {24, 0, 0, 1, req}; }
Bytes ticket_msg(size_t body) {
    Bytes m{4, static_cast<uint8_t>(body >> 16), static_cast<uint8_t>(body >> 8), static_cast<uint8_t>(body)};
    m.resize(4 + body, 0x77);
    return m;
}

TEST(PostHandshakeParser, KeyUpdateWholeAndSplitByteByByte) {
    PostHandshakeParser p(TlsVersion::tls1_3);
    auto ev = p.feed(key_update_msg(0));
    ASSERT_TRUE(ev);
    EXPECT_TRUE(ev->key_update);
    EXPECT_FALSE(ev->update_requested);
    const Bytes m = key_update_msg(1);
    for (size_t i = 0; i < m.size(); ++i) {
        ev = p.feed(std::span<const uint8_t>(&m[i], 1));
        ASSERT_TRUE(ev) << i;
        EXPECT_EQ(ev->key_update, i == m.size() - 1);
        EXPECT_EQ(p.mid_message(), i != m.size() - 1);
        if (i < m.size() - 1) {
            // Another record type inside a split handshake message is fatal.
            PostHandshakeParser copy = p;
            EXPECT_FALSE(copy.on_other_record());
        }
    }
    EXPECT_TRUE(ev->update_requested);
    EXPECT_TRUE(p.on_other_record());
    // Header complete in one record, body in the next.
    ASSERT_TRUE(p.feed(std::span<const uint8_t>(m).first(4)));
    ev = p.feed(std::span<const uint8_t>(m).subspan(4));
    ASSERT_TRUE(ev && ev->key_update && ev->update_requested);
}

TEST(PostHandshakeParser, CoalescedTicketsFromAServerAndKeyUpdateLast) {
    PostHandshakeParser p(TlsVersion::tls1_3, PostHandshakeParser::Sender::server);
    Bytes rec = ticket_msg(200);
    Bytes t2 = ticket_msg(0);
    Bytes ku = key_update_msg(0);
    rec.insert(rec.end(), t2.begin(), t2.end());
    rec.insert(rec.end(), ku.begin(), ku.end());
    auto ev = p.feed(rec);
    ASSERT_TRUE(ev) << ev.error().message();
    EXPECT_EQ(ev->tickets, 2u);
    EXPECT_TRUE(ev->key_update);
    // A big ticket split over records is skipped without buffering.
    Bytes big = ticket_msg(70000);
    ASSERT_TRUE(p.feed(std::span<const uint8_t>(big).first(3)));
    ev = p.feed(std::span<const uint8_t>(big).subspan(3, 40000));
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->tickets, 0u);
    EXPECT_TRUE(p.mid_message());
    ev = p.feed(std::span<const uint8_t>(big).subspan(40003));
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->tickets, 1u);
    EXPECT_FALSE(p.mid_message());
}

TEST(PostHandshakeParser, Rejections) {
    using E = RecordError;
    auto fails = [](PostHandshakeParser p, const Bytes& rec, E want) {
        auto ev = p.feed(rec);
        if (ev) return false;
        EXPECT_EQ(ev.error().code, EPROTO);
        EXPECT_EQ(p.failure(), want) << (p.failure() ? describe(*p.failure()).name : "none");
        EXPECT_EQ(p.feed(key_update_msg(0)).error().code, ENOTRECOVERABLE) << "poisoned";
        return true;
    };
    const PostHandshakeParser client13(TlsVersion::tls1_3);
    EXPECT_TRUE(fails(client13, ticket_msg(20), E::unexpected_handshake_message));  // clients send no tickets
    EXPECT_TRUE(fails(client13, key_update_msg(2), E::key_update_bad_value));        // illegal KeyUpdateRequest
    EXPECT_TRUE(fails(client13, key_update_msg(0xff), E::key_update_bad_value));
    EXPECT_TRUE(fails(client13, {24, 0, 0, 2, 0, 0}, E::key_update_bad_length));  // KeyUpdate length 2
    EXPECT_TRUE(fails(client13, {24, 0, 0, 0}, E::key_update_bad_length));        // KeyUpdate length 0
    EXPECT_TRUE(fails(client13, {1, 0, 0, 4, 3, 3, 0, 0}, E::unexpected_handshake_message));  // ClientHello
    EXPECT_TRUE(fails(client13, {11, 0, 0, 0}, E::unexpected_handshake_message));  // Certificate
    Bytes two = key_update_msg(0);
    two.push_back(24);  // KeyUpdate not at the record end
    EXPECT_TRUE(fails(client13, two, E::key_update_not_at_record_end));
    Bytes ku_then_ku = key_update_msg(0);
    Bytes second = key_update_msg(0);
    ku_then_ku.insert(ku_then_ku.end(), second.begin(), second.end());
    EXPECT_TRUE(fails(client13, ku_then_ku, E::key_update_not_at_record_end));
    const PostHandshakeParser server13(TlsVersion::tls1_3, PostHandshakeParser::Sender::server);
    EXPECT_TRUE(fails(server13, {4, 0x03, 0x00, 0x00}, E::unexpected_handshake_message));  // ticket over the bound
    const PostHandshakeParser v12(TlsVersion::tls1_2);
    EXPECT_TRUE(fails(v12, key_update_msg(0), E::unexpected_handshake_message));  // no KeyUpdate in TLS 1.2
    EXPECT_TRUE(fails(v12, {0, 0, 0, 0}, E::unexpected_handshake_message));       // HelloRequest / renegotiation

    // A fragmented KeyUpdate with another record in between (RFC 8446 §5.1).
    PostHandshakeParser split(TlsVersion::tls1_3);
    ASSERT_TRUE(split.feed(Bytes{24, 0}));
    EXPECT_FALSE(split.on_other_record());
    EXPECT_EQ(split.failure(), E::handshake_interleaved);
}

// ---------------------------------------------------------------------------------------------
// The error table (crypto/record_errors.hpp)

TEST(RecordErrorTable, EveryRowIsComplete) {
    const auto table = record_error_table();
    ASSERT_EQ(table.size(), static_cast<size_t>(RecordError::count));
    for (size_t i = 0; i < table.size(); ++i) {
        const auto& row = table[i];
        SCOPED_TRACE(row.name);
        EXPECT_EQ(static_cast<size_t>(row.error), i);
        EXPECT_EQ(&describe(row.error), &row);
        EXPECT_NE(std::string(row.rfc).find("RFC"), std::string::npos) << "no reference";
        EXPECT_TRUE(counter_for_close_reason(row.close_reason));
        EXPECT_EQ(*counter_for_close_reason(row.close_reason), row.counter);
    }
    EXPECT_FALSE(counter_for_close_reason("client_close"));
}

// The alerts RFC 8446 asks for, row by row (issue 13's list).
TEST(RecordErrorTable, AlertsAsTheRfcSays) {
    using E = RecordError;
    const std::pair<E, uint8_t> want[] = {
        {E::bad_record_mac, kAlertBadRecordMac},
        {E::record_too_short, kAlertBadRecordMac},
        {E::ciphertext_overflow, kAlertRecordOverflow},
        {E::plaintext_overflow, kAlertRecordOverflow},
        {E::zero_inner_type, kAlertUnexpectedMessage},
        {E::malformed_alert, kAlertDecodeError},
        {E::unknown_record_type, kAlertUnexpectedMessage},
        {E::ccs_after_handshake, kAlertUnexpectedMessage},
        {E::key_update_bad_value, kAlertIllegalParameter},
        {E::key_update_bad_length, kAlertDecodeError},
        {E::key_update_not_at_record_end, kAlertUnexpectedMessage},
        {E::handshake_interleaved, kAlertUnexpectedMessage},
        {E::unexpected_handshake_message, kAlertUnexpectedMessage},
        {E::empty_handshake_record, kAlertUnexpectedMessage},
        {E::too_many_empty_records, kAlertUnexpectedMessage},
        {E::bad_record_version, kAlertDecodeError},
    };
    for (const auto& [e, alert] : want) EXPECT_EQ(describe(e).alert, alert) << describe(e).name;
    EXPECT_EQ(std::size(want), static_cast<size_t>(E::count));
    EXPECT_EQ(describe(E::bad_record_mac).counter, RecordCounter::bad_records);
    EXPECT_STREQ(describe(E::bad_record_mac).close_reason, "bad_record");
    EXPECT_STREQ(describe(E::ciphertext_overflow).close_reason, "record_overflow");
    EXPECT_STREQ(describe(E::key_update_bad_value).close_reason, "bad_key_update");
}

// ---------------------------------------------------------------------------------------------
// KeyUpdateLimiter

TEST(KeyUpdateLimiter, RecordsBetweenUpdates) {
    KeyUpdateLimiter lim;
    const auto t0 = KeyUpdateLimiter::Clock::time_point{} + std::chrono::hours(1);
    EXPECT_TRUE(lim.allow(1, t0));  // the first one is exempt from the record rule
    EXPECT_FALSE(lim.allow(63, t0 + std::chrono::seconds(5)));
    EXPECT_TRUE(lim.allow(64, t0 + std::chrono::seconds(5)));
    EXPECT_EQ(lim.accepted(), 2u);
}

TEST(KeyUpdateLimiter, PerSecondSlidingWindow) {
    KeyUpdateLimiter lim({.per_second = 8, .min_records = 0});
    const auto t0 = KeyUpdateLimiter::Clock::time_point{} + std::chrono::hours(1);
    using std::chrono::milliseconds;
    for (int i = 0; i < 8; ++i) EXPECT_TRUE(lim.allow(0, t0 + milliseconds(100 * i))) << i;
    EXPECT_FALSE(lim.allow(0, t0 + milliseconds(800)));
    EXPECT_FALSE(lim.allow(0, t0 + milliseconds(999)));
    EXPECT_TRUE(lim.allow(0, t0 + milliseconds(1000)));   // the first one left the window
    EXPECT_FALSE(lim.allow(0, t0 + milliseconds(1050)));  // the second (at 100 ms) has not
    EXPECT_TRUE(lim.allow(0, t0 + milliseconds(1100)));
    EXPECT_EQ(lim.accepted(), 10u);
    KeyUpdateLimiter one({.per_second = 0, .min_records = 0});  // clamped to 1
    EXPECT_TRUE(one.allow(0, t0));
    EXPECT_FALSE(one.allow(0, t0 + milliseconds(500)));
}

}  // namespace
}  // namespace ztp::crypto
