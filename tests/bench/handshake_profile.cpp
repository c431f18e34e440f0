// handshake_profile: N full TLS handshakes in memory (a BIO pair, no sockets), the server side built
// by ztproxy's own ServerTlsContext::build with the listener settings it would run with, so that
// callgrind can count the server's instructions per handshake, setting by setting.
//
//   valgrind --tool=callgrind --toggle-collect='ztp_server_*' build/tests/bench/handshake_profile [options]
//   (tests/bench/handshake_profile.py runs every mode that way and prints the table)
//
// Options:
//   -n N                      handshakes (default 200)
//   --cert ecdsa|rsa|chain    ECDSA P-256 or RSA-2048 self-signed leaf (like the bench), or an
//                             ECDSA leaf issued by an intermediate, with the intermediate in the
//                             certificate file (leaf first, as operators deploy it)
//   --tls 1.3|1.2             the only version the client offers (default 1.3)
//   --group X25519|P-256      the only group the client offers a key share for (default X25519)
//   --record-path userspace|openssl
//                             what the server does after the handshake, as proxy/conn/connection.cpp
//                             does it: userspace takes the keys out of OpenSSL, builds the record
//                             reader and writer and frees the SSL; openssl keeps the SSL (default
//                             userspace)
//   --tickets N               [listener.tls] tls13_tickets (default: the listener default)
//   --no-tickets              session_tickets = false
//   --session-cache on|off    the server's session cache (default: as ServerTlsContext builds it)
//
// Per handshake the server also opens one 16-byte application record from the client and seals
// the 16-byte answer (the bench's echo round trip). Everything the server does is inside the
// ztp_server_* functions, and only those are collected, so the client's work is not counted.
// Prints one line (the settings and the tickets the client received); the instruction count is
// callgrind's. Deterministic apart from the random values of the handshakes themselves (key shares,
// ECDSA nonces, RSA blinding). Not a test: it prints numbers.
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "crypto/handshake.hpp"
#include "crypto/kernel_record_path.hpp"
#include "crypto/record_layer.hpp"
#include "crypto/tls_context.hpp"

namespace {

using namespace ztp;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "handshake_profile: %s: %s\n", what.c_str(), crypto::take_openssl_error().c_str());
    std::exit(1);
}

struct Options {
    int n = 200;
    std::string cert = "ecdsa";
    std::string tls = "1.3";
    std::string group = "X25519";
    std::string record_path = "userspace";
    std::optional<unsigned> tickets;
    bool no_tickets = false;
    std::string session_cache;
};

// ---------------------------------------------------------------------------- certificates

EVP_PKEY* new_key(bool rsa) {
    EVP_PKEY* k = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
    if (k == nullptr) die("key generation");
    return k;
}

X509* new_cert(EVP_PKEY* key, const char* cn, EVP_PKEY* issuer_key, X509* issuer, bool ca) {
    X509* c = X509_new();
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), ca ? 1 : 2);
    X509_gmtime_adj(X509_getm_notBefore(c), -3600);
    X509_gmtime_adj(X509_getm_notAfter(c), 86400);
    X509_set_pubkey(c, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(c), "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
    X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(c));
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer ? issuer : c, c, nullptr, nullptr, 0);
    const char* ext[][2] = {{"basicConstraints", ca ? "critical,CA:TRUE" : "CA:FALSE"},
                            {"subjectAltName", ca ? nullptr : "DNS:localhost"}};
    for (auto& e : ext) {
        if (e[1] == nullptr) continue;
        X509_EXTENSION* x = X509V3_EXT_conf(nullptr, &v3, e[0], e[1]);
        if (x == nullptr) die("certificate extension");
        X509_add_ext(c, x, -1);
        X509_EXTENSION_free(x);
    }
    if (X509_sign(c, issuer_key ? issuer_key : key, EVP_sha256()) == 0) die("certificate signature");
    return c;
}

void write_pem(const std::string& path, X509* leaf, X509* extra, EVP_PKEY* key, const std::string& key_path) {
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr || PEM_write_X509(f, leaf) != 1 || (extra && PEM_write_X509(f, extra) != 1)) die("write " + path);
    std::fclose(f);
    FILE* k = std::fopen(key_path.c_str(), "w");
    if (k == nullptr || PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr) != 1) die("write key");
    std::fclose(k);
}

// Writes cert.pem and key.pem into dir: a self-signed leaf, or leaf + intermediate for "chain".
void make_certificate(const std::string& kind, const std::string& dir) {
    if (kind == "chain") {
        EVP_PKEY* root_key = new_key(false);
        X509* root = new_cert(root_key, "ztproxy profile root", nullptr, nullptr, true);
        EVP_PKEY* mid_key = new_key(false);
        X509* mid = new_cert(mid_key, "ztproxy profile intermediate", root_key, root, true);
        EVP_PKEY* leaf_key = new_key(false);
        X509* leaf = new_cert(leaf_key, "localhost", mid_key, mid, false);
        write_pem(dir + "/cert.pem", leaf, mid, leaf_key, dir + "/key.pem");
        for (X509* c : {root, mid, leaf}) X509_free(c);
        for (EVP_PKEY* k : {root_key, mid_key, leaf_key}) EVP_PKEY_free(k);
        return;
    }
    EVP_PKEY* key = new_key(kind == "rsa");
    X509* leaf = new_cert(key, "localhost", nullptr, nullptr, false);
    write_pem(dir + "/cert.pem", leaf, nullptr, key, dir + "/key.pem");
    X509_free(leaf);
    EVP_PKEY_free(key);
}

// ---------------------------------------------------------------------------- the server side

// One server connection: what proxy/conn/connection.cpp holds per handshake.
struct ServerConn {
    SslPtr ssl;
    BIO* net = nullptr;  // our reference to the server's end of the pair (userspace path)
    std::optional<crypto::RecordReader> reader;
    std::optional<crypto::RecordWriter> writer;
    crypto::CachedSession cached;
};

// Everything the server does lives in these functions (callgrind --toggle-collect='ztp_server_*').
extern "C" {

__attribute__((noinline)) void ztp_server_new(const crypto::ServerTlsContext* tls, ServerConn* sc, BIO* server_bio) {
    sc->ssl = tls->new_session(-1);
    if (!sc->ssl) die("new_session");
    BIO_up_ref(server_bio);
    sc->net = server_bio;
    SSL_set_bio(sc->ssl.get(), server_bio, server_bio);
}

__attribute__((noinline)) crypto::HandshakeStatus ztp_server_step(ServerConn* sc) {
    auto step = crypto::handshake_step(sc->ssl.get());
    if (step.status == crypto::HandshakeStatus::failed) die("server handshake: " + step.error);
    return step.status;
}

// After the handshake: what Connection::choose_record_path does for the path.
__attribute__((noinline)) void ztp_server_after_handshake(const crypto::ServerTlsContext* tls, ServerConn* sc,
                                                          bool userspace) {
    (void)crypto::session_info(sc->ssl.get());
    if (!userspace) return;
    auto taken = crypto::take_keys_for_offload(sc->ssl.get());
    if (!taken.keys) die("take_keys_for_offload: " + taken.detail);
    SSL_set_msg_callback(sc->ssl.get(), nullptr);
    auto& keys = *taken.keys;
    auto reader = crypto::RecordReader::create(std::move(keys.rx), std::move(keys.rx_secret));
    auto writer = crypto::RecordWriter::create(std::move(keys.tx), std::move(keys.tx_secret), keys.max_plaintext);
    if (!reader || !writer) die("record layer");
    sc->reader.emplace(std::move(reader).value());
    sc->writer.emplace(std::move(writer).value());
    sc->cached = crypto::free_after_offload(std::move(sc->ssl), tls->session_cache_ctx());
}

// The echo: one application record in, the same bytes back.
__attribute__((noinline)) void ztp_server_echo(ServerConn* sc) {
    std::array<uint8_t, 256> buf{};
    if (sc->ssl) {
        int n = SSL_read(sc->ssl.get(), buf.data(), static_cast<int>(buf.size()));
        if (n <= 0 || SSL_write(sc->ssl.get(), buf.data(), n) != n) die("SSL_read/SSL_write echo");
        return;
    }
    int got = BIO_read(sc->net, buf.data(), static_cast<int>(buf.size()));
    if (got <= 0) die("BIO_read");
    auto opened = sc->reader->open_in_place(std::span<uint8_t>(buf.data(), static_cast<size_t>(got)));
    if (!opened || opened->record_size != static_cast<size_t>(got)) die("open_in_place");
    std::array<uint8_t, 256> out{};
    const size_t head = sc->writer->headroom();
    std::memcpy(out.data() + head, buf.data() + opened->plaintext_offset, opened->plaintext_size);
    auto sealed = sc->writer->seal_in_place(out, opened->plaintext_size, crypto::ContentType::application_data);
    if (!sealed || BIO_write(sc->net, out.data(), static_cast<int>(*sealed)) != static_cast<int>(*sealed))
        die("seal_in_place");
}

// The end of a clean connection (the client's close_notify): the session stays resumable.
__attribute__((noinline)) void ztp_server_end(const crypto::ServerTlsContext* tls, ServerConn* sc) {
    sc->cached.end("client_close");
    if (sc->ssl) crypto::end_session(sc->ssl.get(), tls->session_cache_ctx(), "client_close");
    sc->ssl.reset();
    sc->reader.reset();
    sc->writer.reset();
    BIO_free(sc->net);
    sc->net = nullptr;
}

}  // extern "C"

// ---------------------------------------------------------------------------- the client side

int tickets_seen = 0;
int on_client_ticket(SSL*, SSL_SESSION*) {
    ++tickets_seen;
    return 0;  // not kept
}

SslCtxPtr client_ctx(const Options& o) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) die("client SSL_CTX_new");
    const int v = o.tls == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(ctx.get(), v);
    SSL_CTX_set_max_proto_version(ctx.get(), v);
    // The bench's client: one suite, every handshake a full one; tickets counted, not kept.
    SSL_CTX_set_ciphersuites(ctx.get(), "TLS_AES_128_GCM_SHA256");
    SSL_CTX_set_cipher_list(ctx.get(), "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
    // TLS 1.2 ECDSA needs the certificate's curve among the client's groups (RFC 8422 §5.1.1);
    // the key exchange still uses the first group of the server's list that the client offers.
    const std::string groups = o.tls == "1.2" && o.group != "P-256" ? o.group + ":P-256" : o.group;
    if (SSL_CTX_set1_groups_list(ctx.get(), groups.c_str()) != 1) die("client group " + o.group);
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx.get(), on_client_ticket);
    return ctx;
}

void one_handshake(const crypto::ServerTlsContext* tls, SSL_CTX* cctx, bool userspace) {
    BIO* server_bio = nullptr;
    BIO* client_bio = nullptr;
    if (BIO_new_bio_pair(&server_bio, 64 * 1024, &client_bio, 64 * 1024) != 1) die("BIO pair");
    ServerConn sc;
    ztp_server_new(tls, &sc, server_bio);
    SslPtr client(SSL_new(cctx));
    SSL_set_bio(client.get(), client_bio, client_bio);
    SSL_set_connect_state(client.get());
    SSL_set_tlsext_host_name(client.get(), "localhost");
    bool client_done = false;
    bool server_done = false;
    for (int turn = 0; turn < 32 && !(client_done && server_done); ++turn) {
        if (!client_done) {
            int rc = SSL_do_handshake(client.get());
            if (rc == 1) client_done = true;
            else if (int e = SSL_get_error(client.get(), rc); e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                die("client handshake");
        }
        if (!server_done) {
            server_done = ztp_server_step(&sc) == crypto::HandshakeStatus::done;
        }
    }
    if (!client_done || !server_done) die("handshake did not finish");
    ztp_server_after_handshake(tls, &sc, userspace);
    static const char kPing[17] = "0123456789abcdef";
    if (SSL_write(client.get(), kPing, 16) != 16) die("client write");
    ztp_server_echo(&sc);
    char back[16];
    if (SSL_read(client.get(), back, sizeof back) != 16 || std::memcmp(back, kPing, 16) != 0) die("client echo");
    ztp_server_end(tls, &sc);
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "handshake_profile: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "-n") o.n = std::atoi(value().c_str());
        else if (a == "--cert") o.cert = value();
        else if (a == "--tls") o.tls = value();
        else if (a == "--group") o.group = value();
        else if (a == "--record-path") o.record_path = value();
        else if (a == "--tickets") o.tickets = static_cast<unsigned>(std::atoi(value().c_str()));
        else if (a == "--no-tickets") o.no_tickets = true;
        else if (a == "--session-cache") o.session_cache = value();
        else {
            std::fprintf(stderr, "handshake_profile: unknown option %s (see the comment at the top of %s)\n",
                         a.c_str(), __FILE__);
            std::exit(2);
        }
    }
    const bool ok = o.n > 0 && (o.cert == "ecdsa" || o.cert == "rsa" || o.cert == "chain") &&
                    (o.tls == "1.3" || o.tls == "1.2") &&
                    (o.record_path == "userspace" || o.record_path == "openssl") &&
                    (o.session_cache.empty() || o.session_cache == "on" || o.session_cache == "off");
    if (!ok) {
        std::fprintf(stderr, "handshake_profile: bad option value\n");
        std::exit(2);
    }
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    char dir_template[] = "/tmp/ztp-hs-profile-XXXXXX";
    const char* dir = mkdtemp(dir_template);
    if (dir == nullptr) die("mkdtemp");
    make_certificate(o.cert, dir);

    config::Listener listener;
    listener.name = "profile";
    config::Certificate cert;
    cert.name = "profile";
    cert.cert_file = std::string(dir) + "/cert.pem";
    cert.key_file = std::string(dir) + "/key.pem";
    listener.tls.certificates.push_back(cert);
    listener.tls.record_path = o.record_path == "openssl" ? config::RecordPathMode::openssl
                                                          : config::RecordPathMode::userspace;
    listener.tls.ktls = config::KtlsMode::off;
    if (o.no_tickets) listener.tls.session_tickets = false;
    if (o.tickets) listener.tls.tls13_tickets = *o.tickets;
    std::vector<config::Diagnostic> problems;
    auto tls = crypto::ServerTlsContext::build(listener, nullptr, problems);
    std::filesystem::remove_all(dir);
    if (!tls) {
        for (const auto& p : problems) std::fprintf(stderr, "handshake_profile: %s\n", p.message.c_str());
        return 1;
    }
    if (o.session_cache == "off") SSL_CTX_set_session_cache_mode(tls->session_cache_ctx(), SSL_SESS_CACHE_OFF);
    if (o.session_cache == "on") SSL_CTX_set_session_cache_mode(tls->session_cache_ctx(), SSL_SESS_CACHE_SERVER);

    auto cctx = client_ctx(o);
    for (int i = 0; i < o.n; ++i) one_handshake(tls.get(), cctx.get(), o.record_path == "userspace");
    std::printf("handshakes=%d cert=%s tls=%s group=%s record_path=%s tickets_per_handshake=%.2f\n", o.n,
                o.cert.c_str(), o.tls.c_str(), o.group.c_str(), o.record_path.c_str(),
                static_cast<double>(tickets_seen) / o.n);
    return 0;
}
