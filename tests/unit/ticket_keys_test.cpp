// Session ticket keys (crypto/ticket_keys, crypto/ticket_key_file): the key file's parser and its
// messages, the generated store's rotation on an injected clock, the EVP callback OpenSSL calls,
// whole TLS handshakes resuming (or not) across contexts with shared keys, the policy key, and
// which connection endings keep a session in the cache.
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "config/policy_loader.hpp"
#include "crypto/handshake.hpp"
#include "crypto/ticket_key_file.hpp"
#include "crypto/ticket_keys.hpp"
#include "proxy/app/quick_policy.hpp"
#include "proxy/conn/stats.hpp"
#include "tls_test_support.hpp"

namespace ztp::crypto {
namespace {

using namespace std::chrono_literals;
using testing::Bytes;
using testing::test_cert;
using testing::would_block;
using EvpCipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CDeleter<EVP_CIPHER_CTX_free>>;
using EvpMacPtr = std::unique_ptr<EVP_MAC, CDeleter<EVP_MAC_free>>;
using EvpMacCtxPtr = std::unique_ptr<EVP_MAC_CTX, CDeleter<EVP_MAC_CTX_free>>;
using SslSessionPtr = std::unique_ptr<SSL_SESSION, CDeleter<SSL_SESSION_free>>;

Bytes random_key_bytes(size_t n = kTicketKeyBytes) {
    Bytes b(n);
    EXPECT_EQ(RAND_bytes(b.data(), static_cast<int>(n)), 1);
    return b;
}

std::string base64(const Bytes& b) {
    std::string out(4 * ((b.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), b.data(), static_cast<int>(b.size()));
    out.resize(static_cast<size_t>(n));
    return out;
}

Bytes name_of(const TicketKey& k) { return Bytes(k.name.begin(), k.name.end()); }
Bytes name_of(const Bytes& key_bytes) { return Bytes(key_bytes.begin(), key_bytes.begin() + kTicketKeyNameBytes); }

std::string parse_error(const std::string& text) {
    auto f = parse_ticket_key_file(text);
    EXPECT_TRUE(f.keys.empty());
    return f.error;
}

// ---------------------------------------------------------------------------------------------
// The key file

TEST(TicketKeyFile, ParsesKeysInOrderSkippingCommentsAndBlankLines) {
    const Bytes a = random_key_bytes(), b = random_key_bytes();
    const std::string text = "# rotated 2026-12-01\n\n  " + base64(a) + "  \r\n\t\n" + base64(b);  // no final newline
    auto f = parse_ticket_key_file(text);
    ASSERT_EQ(f.error, "");
    ASSERT_EQ(f.keys.size(), 2u);
    EXPECT_EQ(name_of(*f.keys[0]), name_of(a));
    EXPECT_TRUE(f.keys[0]->hmac.equals(std::span(a).subspan(16, 32)));
    EXPECT_TRUE(f.keys[0]->aes.equals(std::span(a).subspan(48, 32)));
    EXPECT_EQ(name_of(*f.keys[1]), name_of(b));
}

TEST(TicketKeyFile, NamesTheBadLineAndColumnNeverTheContent) {
    const std::string good = base64(random_key_bytes());
    std::string bad = base64(random_key_bytes());
    bad[9] = '!';
    const std::string error = parse_error(good + "\n# comment\n  " + bad + "\n");
    EXPECT_EQ(error, "line 3, column 12: not base64");
    EXPECT_EQ(error.find(bad.substr(0, 8)), std::string::npos);
}

TEST(TicketKeyFile, RejectsPaddingInsideAndSpacesWithin) {
    std::string key = base64(random_key_bytes());
    EXPECT_EQ(parse_error(key.substr(0, 40) + " " + key.substr(40)), "line 1, column 41: not base64");
    std::string padded = key;
    padded[20] = '=';
    EXPECT_EQ(parse_error(padded), "line 1, column 21: not base64");
}

TEST(TicketKeyFile, RejectsWrongLengths) {
    const std::string expected_tail =
        " bytes, expected 80 (16-byte name, 32-byte HMAC key, 32-byte AES-256 key; openssl rand 80 | base64 -w0)";
    EXPECT_EQ(parse_error(base64(random_key_bytes(48))), "line 1: key is 48" + expected_tail);
    EXPECT_EQ(parse_error(base64(random_key_bytes()) + "\n" + base64(random_key_bytes(81))),
              "line 2: key is 81" + expected_tail);
    EXPECT_EQ(parse_error(base64(random_key_bytes()).substr(0, 107)),
              "line 1: base64 text cut short (107 characters, not a multiple of 4)");
}

TEST(TicketKeyFile, RejectsAFileWithoutKeys) {
    const std::string message =
        "no key in the file (one base64 key of 80 bytes per line; openssl rand 80 | base64 -w0)";
    EXPECT_EQ(parse_error(""), message);
    EXPECT_EQ(parse_error("# only a comment\n\n   \n"), message);
}

TEST(TicketKeyFile, RejectsTwoKeysWithOneName) {
    Bytes a = random_key_bytes(), b = random_key_bytes();
    std::copy_n(a.begin(), kTicketKeyNameBytes, b.begin());
    EXPECT_EQ(parse_error(base64(a) + "\n\n" + base64(b) + "\n"),
              "line 3: key name (its first 16 bytes) repeats line 1's");
}

class TicketKeyFileOnDisk : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/ztp-ticket-keys-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::string write(const std::string& name, const std::string& text, mode_t mode) {
        const std::string path = dir_ + "/" + name;
        std::ofstream(path) << text;
        EXPECT_EQ(::chmod(path.c_str(), mode), 0);
        return path;
    }
    std::string dir_;
};

TEST_F(TicketKeyFileOnDisk, LoadsAndFlagsWorldReadableFiles) {
    const std::string key = base64(random_key_bytes()) + "\n";
    auto owner_only = load_ticket_key_file(write("keys", key, 0600));
    EXPECT_EQ(owner_only.error, "");
    EXPECT_EQ(owner_only.keys.size(), 1u);
    EXPECT_FALSE(owner_only.world_readable);
    auto everyone = load_ticket_key_file(write("open", key, 0644));
    EXPECT_EQ(everyone.keys.size(), 1u);
    EXPECT_TRUE(everyone.world_readable);
}

TEST_F(TicketKeyFileOnDisk, ReportsWhatCannotBeRead) {
    EXPECT_EQ(load_ticket_key_file(dir_ + "/missing").error, "cannot read: No such file or directory");
    EXPECT_EQ(load_ticket_key_file(dir_).error, "not a regular file");
    EXPECT_EQ(load_ticket_key_file(write("big", std::string(70 * 1024, 'A'), 0600)).error,
              "larger than 64 KiB: not a key file");
    if (::geteuid() != 0) {  // root reads anything
        EXPECT_EQ(load_ticket_key_file(write("locked", base64(random_key_bytes()), 0000)).error,
                  "cannot read: Permission denied");
    }
}

// ---------------------------------------------------------------------------------------------
// The generated store

struct FakeClock {
    std::chrono::steady_clock::time_point now{std::chrono::hours(1000)};
    TicketKeyStore::Clock fn() {
        return [this] { return now; };
    }
};

std::vector<Bytes> names(const TicketKeys& keys) {
    std::vector<Bytes> out;
    for (const auto& k : keys) out.push_back(name_of(*k));
    return out;
}

TEST(TicketKeyStore, RotatesOnScheduleKeepingThePreviousTwo) {
    FakeClock clock;
    const auto start = clock.now;
    TicketKeyStore store({12h, 2}, clock.fn());
    const auto k0 = names(*store.keys());
    ASSERT_EQ(k0.size(), 1u);
    EXPECT_EQ(store.next_rotation(), start + 12h);

    clock.now = start + 12h - 1s;
    EXPECT_EQ(names(*store.keys()), k0);  // not yet

    clock.now = start + 12h;
    const auto k1 = names(*store.keys());
    ASSERT_EQ(k1.size(), 2u);
    EXPECT_NE(k1[0], k0[0]);  // a new key encrypts...
    EXPECT_EQ(k1[1], k0[0]);  // ...the old one still decrypts
    EXPECT_EQ(store.next_rotation(), start + 24h);

    clock.now = start + 24h + 5min;
    const auto k2 = names(*store.keys());
    EXPECT_EQ(k2, (std::vector<Bytes>{k2[0], k1[0], k0[0]}));
    EXPECT_EQ(store.next_rotation(), start + 36h);  // on the schedule, not from the late call

    clock.now = start + 36h;
    store.rotate_if_due();
    const auto k3 = names(*store.keys());
    EXPECT_EQ(k3, (std::vector<Bytes>{k3[0], k2[0], k1[0]}));  // the oldest is gone
    std::set<Bytes> distinct(k3.begin(), k3.end());
    distinct.insert(k0[0]);
    EXPECT_EQ(distinct.size(), 4u);
}

TEST(TicketKeyStore, AnIdleProcessDropsKeysThatOutlivedTheirWindow) {
    FakeClock clock;
    const auto start = clock.now;
    TicketKeyStore store({12h, 2}, clock.fn());
    clock.now = start + 12h;
    const auto before = names(*store.keys());  // [k1, k0]
    ASSERT_EQ(before.size(), 2u);

    clock.now = start + 36h;  // two periods without a call
    const auto after = names(*store.keys());
    // k1 stopped encrypting at 24 h (kept: previous two); k0 at 12 h is three periods old (gone).
    EXPECT_EQ(after, (std::vector<Bytes>{after[0], before[0]}));
    EXPECT_EQ(store.next_rotation(), start + 48h);

    clock.now = start + 96h;  // long past every key's window
    const auto fresh = names(*store.keys());
    ASSERT_EQ(fresh.size(), 1u);
    EXPECT_NE(fresh[0], after[0]);
    EXPECT_EQ(store.next_rotation(), start + 108h);
}

TEST(TicketKeyStore, FixedKeysNeverRotate) {
    auto file = parse_ticket_key_file(base64(random_key_bytes()) + "\n" + base64(random_key_bytes()));
    ASSERT_EQ(file.error, "");
    const auto expected = names(file.keys);
    TicketKeyStore store(std::move(file.keys));
    EXPECT_EQ(store.next_rotation(), std::nullopt);
    store.rotate_if_due();
    EXPECT_EQ(names(*store.keys()), expected);
}

TEST(TicketKeyStore, TheProcessStoreIsOneAndRotatesEveryTwelveHours) {
    EXPECT_EQ(TicketKeyStore::process().get(), TicketKeyStore::process().get());
    ASSERT_FALSE(TicketKeyStore::process()->keys()->empty());
    EXPECT_EQ(TicketKeyStore::kProcessSchedule.every, 12h);
    EXPECT_EQ(TicketKeyStore::kProcessSchedule.keep_previous, 2u);
}

// ---------------------------------------------------------------------------------------------
// The EVP callback

std::shared_ptr<TicketKeyStore> fixed_store(std::initializer_list<const Bytes*> keys) {
    TicketKeys list;
    for (const Bytes* k : keys)
        list.push_back(std::make_shared<const TicketKey>(
            TicketKey::from_bytes(std::span<const uint8_t, kTicketKeyBytes>(k->data(), kTicketKeyBytes))));
    return std::make_shared<TicketKeyStore>(std::move(list));
}

SslCtxPtr server_ctx(std::shared_ptr<TicketKeyStore> store, int version = TLS1_3_VERSION) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
    SSL_CTX_set_min_proto_version(ctx.get(), version);
    SSL_CTX_set_max_proto_version(ctx.get(), version);
    static const unsigned char sid_ctx[] = "ticket_keys_test";
    SSL_CTX_set_session_id_context(ctx.get(), sid_ctx, sizeof sid_ctx - 1);
    EXPECT_EQ(SSL_CTX_use_certificate(ctx.get(), test_cert().cert.get()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey(ctx.get(), test_cert().key.get()), 1);
    EXPECT_TRUE(use_ticket_keys(ctx.get(), std::move(store)));
    return ctx;
}

// The contexts OpenSSL hands the callback for one ticket.
struct EvpContexts {
    EvpCipherCtxPtr cipher{EVP_CIPHER_CTX_new()};
    EvpMacPtr mac_alg{EVP_MAC_fetch(nullptr, "HMAC", nullptr)};
    EvpMacCtxPtr mac_ctx{EVP_MAC_CTX_new(mac_alg.get())};
    EVP_MAC_CTX* mac = mac_ctx.get();
};

// What OpenSSL does with the contexts the callback set up: encrypt (or decrypt), then MAC.
struct Sealed {
    Bytes ciphertext;
    Bytes tag;
};

Sealed seal(EvpContexts& c, const Bytes& plain) {
    Sealed s;
    s.ciphertext.resize(plain.size() + 32);
    int n = 0, m = 0;
    EXPECT_EQ(EVP_EncryptUpdate(c.cipher.get(), s.ciphertext.data(), &n, plain.data(),
                                static_cast<int>(plain.size())),
              1);
    EXPECT_EQ(EVP_EncryptFinal_ex(c.cipher.get(), s.ciphertext.data() + n, &m), 1);
    s.ciphertext.resize(static_cast<size_t>(n + m));
    s.tag.resize(EVP_MAX_MD_SIZE);
    size_t tag_len = 0;
    EXPECT_EQ(EVP_MAC_init(c.mac, nullptr, 0, nullptr), 1);
    EXPECT_EQ(EVP_MAC_update(c.mac, s.ciphertext.data(), s.ciphertext.size()), 1);
    EXPECT_EQ(EVP_MAC_final(c.mac, s.tag.data(), &tag_len, s.tag.size()), 1);
    s.tag.resize(tag_len);
    return s;
}

// Runs the callback in decrypt mode on a ticket made with `key_name`/`iv`; when it accepts, the
// ticket must verify and decrypt to `plain`.
int open_with(std::shared_ptr<TicketKeyStore> store, Bytes key_name, Bytes iv, const Sealed& sealed,
              const Bytes& plain) {
    auto ctx = server_ctx(std::move(store));
    SslPtr ssl(SSL_new(ctx.get()));
    EvpContexts c;
    const int rc = ticket_key_callback(ssl.get(), key_name.data(), iv.data(), c.cipher.get(), c.mac, 0);
    if (rc != 1 && rc != 2) return rc;
    Bytes tag(EVP_MAX_MD_SIZE);
    size_t tag_len = 0;
    EXPECT_EQ(EVP_MAC_init(c.mac, nullptr, 0, nullptr), 1);
    EXPECT_EQ(EVP_MAC_update(c.mac, sealed.ciphertext.data(), sealed.ciphertext.size()), 1);
    EXPECT_EQ(EVP_MAC_final(c.mac, tag.data(), &tag_len, tag.size()), 1);
    tag.resize(tag_len);
    EXPECT_EQ(tag, sealed.tag) << "HMAC key differs";
    Bytes out(sealed.ciphertext.size());
    int n = 0, m = 0;
    EXPECT_EQ(EVP_DecryptUpdate(c.cipher.get(), out.data(), &n, sealed.ciphertext.data(),
                                static_cast<int>(sealed.ciphertext.size())), 1);
    EXPECT_EQ(EVP_DecryptFinal_ex(c.cipher.get(), out.data() + n, &m), 1) << "AES key differs";
    out.resize(static_cast<size_t>(n + m));
    EXPECT_EQ(out, plain);
    return rc;
}

TEST(TicketKeyCallback, EncryptsWithTheFirstKeyAndDecryptsWithAnyNamedKey) {
    const Bytes a = random_key_bytes(), b = random_key_bytes();
    const Bytes plain = random_key_bytes(200);

    auto ctx = server_ctx(fixed_store({&a, &b}));
    SslPtr ssl(SSL_new(ctx.get()));
    EvpContexts c;
    Bytes key_name(16), iv(EVP_MAX_IV_LENGTH);
    ASSERT_EQ(ticket_key_callback(ssl.get(), key_name.data(), iv.data(), c.cipher.get(), c.mac, 1), 1);
    EXPECT_EQ(key_name, name_of(a));  // the first key encrypts
    EXPECT_EQ(EVP_CIPHER_CTX_get_key_length(c.cipher.get()), 32);  // AES-256
    EXPECT_EQ(EVP_MAC_CTX_get_mac_size(c.mac), 32u);  // HMAC-SHA256
    const Sealed sealed = seal(c, plain);

    EXPECT_EQ(open_with(fixed_store({&a}), key_name, iv, sealed, plain), 1);      // current key
    EXPECT_EQ(open_with(fixed_store({&b, &a}), key_name, iv, sealed, plain), 2);  // older key: renew
    EXPECT_EQ(open_with(fixed_store({&b}), key_name, iv, sealed, plain), 0);      // unknown: ignored

    // A second ticket gets a fresh IV.
    Bytes iv2(EVP_MAX_IV_LENGTH);
    EvpContexts c2;
    ASSERT_EQ(ticket_key_callback(ssl.get(), key_name.data(), iv2.data(), c2.cipher.get(), c2.mac, 1), 1);
    EXPECT_NE(Bytes(iv.begin(), iv.begin() + 16), Bytes(iv2.begin(), iv2.begin() + 16));
}

TEST(TicketKeyCallback, NoKeyMeansNoTicket) {
    auto ctx = server_ctx(std::make_shared<TicketKeyStore>(TicketKeys{}));
    SslPtr ssl(SSL_new(ctx.get()));
    EvpContexts c;
    Bytes key_name(16), iv(EVP_MAX_IV_LENGTH);
    EXPECT_EQ(ticket_key_callback(ssl.get(), key_name.data(), iv.data(), c.cipher.get(), c.mac, 1), 0);
}

// ---------------------------------------------------------------------------------------------
// Whole handshakes: a ticket from one context, offered to another

struct Resumption {
    SslSessionPtr session;  // the client's, with the ticket
    bool resumed = false;
};

bool run_handshake(SSL* client, SSL* server) {
    bool c_done = false, s_done = false;
    for (int i = 0; i < 50 && !(c_done && s_done); ++i) {
        if (!c_done) {
            const int rc = SSL_do_handshake(client);
            if (rc == 1) c_done = true;
            else if (!would_block(client, rc)) return false;
        }
        if (!s_done) {
            const int rc = SSL_do_handshake(server);
            if (rc == 1) s_done = true;
            else if (!would_block(server, rc)) return false;
        }
    }
    return c_done && s_done;
}

// One connection from a client to `server_ctx`, offering `session` (may be null). Returns the
// session the client holds afterwards (TLS 1.3: the ticket read after the handshake).
Resumption connect(SSL_CTX* server_ctx, SSL_SESSION* session, int version) {
    SslCtxPtr cctx(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_min_proto_version(cctx.get(), version);
    SSL_CTX_set_max_proto_version(cctx.get(), version);
    SSL_CTX_set_verify(cctx.get(), SSL_VERIFY_NONE, nullptr);
    SslPtr client(SSL_new(cctx.get())), server(SSL_new(server_ctx));
    BIO *cb = nullptr, *sb = nullptr;
    EXPECT_EQ(BIO_new_bio_pair(&cb, 1 << 16, &sb, 1 << 16), 1);
    SSL_set_bio(client.get(), cb, cb);
    SSL_set_bio(server.get(), sb, sb);
    SSL_set_connect_state(client.get());
    SSL_set_accept_state(server.get());
    if (session) {
        EXPECT_EQ(SSL_set_session(client.get(), session), 1);
    }
    Resumption r;
    EXPECT_TRUE(run_handshake(client.get(), server.get()));
    r.resumed = SSL_session_reused(client.get()) == 1;
    EXPECT_EQ(r.resumed, SSL_session_reused(server.get()) == 1);
    // TLS 1.3 tickets come after the handshake: one read takes them in (then wants more).
    unsigned char byte = 0;
    EXPECT_LE(SSL_read(client.get(), &byte, 1), 0);
    r.session.reset(SSL_get1_session(client.get()));
    // Freed without a shutdown, OpenSSL would mark the session not resumable: say both ended cleanly.
    SSL_set_shutdown(client.get(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_set_shutdown(server.get(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    return r;
}

class TicketResumption : public ::testing::TestWithParam<int> {};

TEST_P(TicketResumption, SharedKeysResumeAcrossContextsAndRemovedKeysDoNot) {
    const int version = GetParam();
    const Bytes a = random_key_bytes(), b = random_key_bytes();
    auto first = server_ctx(fixed_store({&a}), version);
    auto issued = connect(first.get(), nullptr, version);
    ASSERT_FALSE(issued.resumed);
    ASSERT_TRUE(SSL_SESSION_has_ticket(issued.session.get()));

    // A context built later with the same keys (a reload, or another instance) resumes it.
    auto same = server_ctx(fixed_store({&a}), version);
    EXPECT_TRUE(connect(same.get(), issued.session.get(), version).resumed);
    // After prepending a key: still resumed (and renewed with the new key).
    auto rotated = server_ctx(fixed_store({&b, &a}), version);
    auto renewed = connect(rotated.get(), issued.session.get(), version);
    EXPECT_TRUE(renewed.resumed);
    // Once the old key is gone: a full handshake; the renewed ticket still works.
    auto dropped = server_ctx(fixed_store({&b}), version);
    EXPECT_FALSE(connect(dropped.get(), issued.session.get(), version).resumed);
    EXPECT_TRUE(connect(dropped.get(), renewed.session.get(), version).resumed);
    // Keys of their own (OpenSSL's per-context default): never.
    SslCtxPtr own(SSL_CTX_new(TLS_server_method()));
    SSL_CTX_set_min_proto_version(own.get(), version);
    SSL_CTX_set_max_proto_version(own.get(), version);
    static const unsigned char sid_ctx[] = "ticket_keys_test";
    SSL_CTX_set_session_id_context(own.get(), sid_ctx, sizeof sid_ctx - 1);
    ASSERT_EQ(SSL_CTX_use_certificate(own.get(), test_cert().cert.get()), 1);
    ASSERT_EQ(SSL_CTX_use_PrivateKey(own.get(), test_cert().key.get()), 1);
    EXPECT_FALSE(connect(own.get(), issued.session.get(), version).resumed);
}

TEST_P(TicketResumption, TheProcessStoreOutlivesContexts) {
    const int version = GetParam();
    auto before_reload = server_ctx(TicketKeyStore::process(), version);
    auto issued = connect(before_reload.get(), nullptr, version);
    before_reload.reset();  // the reload frees the old contexts
    auto after_reload = server_ctx(TicketKeyStore::process(), version);
    EXPECT_TRUE(connect(after_reload.get(), issued.session.get(), version).resumed);
}

INSTANTIATE_TEST_SUITE_P(Versions, TicketResumption, ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION),
                         [](const auto& info) { return info.param == TLS1_2_VERSION ? "tls1_2" : "tls1_3"; });

// ---------------------------------------------------------------------------------------------
// Configuration

TEST(TicketKeyPolicy, TheKeyFileResolvesAgainstThePolicyAndNeedsTickets) {
    const std::string listener = R"([[listener]]
name = "l"
address = "127.0.0.1:8443"
  [listener.tls]
  session_ticket_keys = "secrets/tickets"
)";
    const std::string rest = R"(  [[listener.tls.certificate]]
  name = "c"
  cert = "c.pem"
  key = "c.key"
[[backend]]
name = "b"
address = "127.0.0.1:8080"
[[route]]
default = true
backend = "b"
)";
    auto ok = config::load_policy_text(listener + rest, "/etc/ztproxy/policy.toml");
    ASSERT_TRUE(ok.policy) << (ok.problems.empty() ? "" : ok.problems[0].str());
    const auto& tls = ok.policy->listeners[0].tls;
    EXPECT_EQ(tls.session_ticket_keys, "/etc/ztproxy/secrets/tickets");
    EXPECT_EQ(tls.session_ticket_keys_loc.line, 5);
    EXPECT_EQ(tls.session_ticket_keys_loc.col, 25);

    auto off = config::load_policy_text(listener + "  session_tickets = false\n" + rest, "p.toml");
    ASSERT_EQ(off.problems.size(), 1u);
    EXPECT_EQ(off.problems[0].str(), "p.toml:5:25: 'session_ticket_keys' needs session_tickets = true");
}

TEST(TicketKeyPolicy, QuickModeFlagIsMadeAbsolute) {
    app::QuickOptions o;
    o.listen = "127.0.0.1:0";
    o.backends = {"127.0.0.1:8080"};
    o.cert = "c.pem";
    o.key = "k.pem";
    o.session_ticket_keys = "tickets.keys";
    std::vector<std::string> problems;
    auto p = app::quick_policy(o, problems);
    EXPECT_TRUE(problems.empty());
    EXPECT_EQ(p.listeners[0].tls.session_ticket_keys,
              (std::filesystem::current_path() / "tickets.keys").string());
}

// ---------------------------------------------------------------------------------------------
// The session cache after an offloaded connection ends

TEST(SessionCache, OnlyCleanEndingsKeepTheSession) {
    // Every close reason the access log knows, decided here on purpose: a new one fails this test
    // until someone says whether a session survives it.
    const std::set<std::string> clean = {"client_close",           "backend_close",       "backend_reset",
                                         "backend_connect_failed", "backend_connect_timeout",
                                         "proxy_header_failed",    "idle_timeout",        "shutdown",
                                         "key_update_unsupported"};
    const std::set<std::string> aborted = {
        "handshake_failed", "handshake_timeout", "client_cert_rejected", "client_reset",
        "client_error",     "client_alert",      "bad_record",           "malformed_record",
        "record_overflow",  "key_update_flood",  "renegotiation_refused", "bad_key_update", "ktls_unavailable",
        "record_path_unavailable", "no_route",   "overloaded",           "internal_error",
        "other"};
    std::set<std::string> known;
    for (const char* reason : conn::kCloseReasons) {
        known.insert(reason);
        EXPECT_TRUE(clean.count(reason) + aborted.count(reason) == 1) << reason << " is not classified here";
        EXPECT_EQ(session_resumable_after(reason), clean.count(reason) == 1) << reason;
    }
    for (const auto& r : clean) EXPECT_TRUE(known.count(r)) << r << " is no close reason any more";
    EXPECT_FALSE(session_resumable_after("something_new"));
}

// A TLS 1.2 session-id session through free_after_offload: in the server's cache after a clean
// end, gone after an abort or when no end was reported.
TEST(SessionCache, FreeAfterOffloadKeepsTheEntryOnlyAfterACleanEnd) {
    for (const char* reason : {"client_close", "bad_record", ""}) {
        SCOPED_TRACE(reason);
        auto sctx = server_ctx(TicketKeyStore::process(), TLS1_2_VERSION);
        SSL_CTX_set_options(sctx.get(), SSL_OP_NO_TICKET);
        SslCtxPtr cctx(SSL_CTX_new(TLS_client_method()));
        SSL_CTX_set_max_proto_version(cctx.get(), TLS1_2_VERSION);
        SSL_CTX_set_verify(cctx.get(), SSL_VERIFY_NONE, nullptr);
        SslPtr client(SSL_new(cctx.get())), server(SSL_new(sctx.get()));
        BIO *cb = nullptr, *sb = nullptr;
        ASSERT_EQ(BIO_new_bio_pair(&cb, 1 << 16, &sb, 1 << 16), 1);
        SSL_set_bio(client.get(), cb, cb);
        SSL_set_bio(server.get(), sb, sb);
        SSL_set_connect_state(client.get());
        SSL_set_accept_state(server.get());
        ASSERT_TRUE(run_handshake(client.get(), server.get()));
        ASSERT_EQ(SSL_CTX_sess_number(sctx.get()), 1);
        {
            CachedSession kept = free_after_offload(std::move(server), sctx.get());
            EXPECT_EQ(SSL_CTX_sess_number(sctx.get()), 1);
            if (*reason) kept.end(reason);
        }
        EXPECT_EQ(SSL_CTX_sess_number(sctx.get()), std::string(reason) == "client_close" ? 1 : 0);
    }
}

}  // namespace
}  // namespace ztp::crypto
