#include "crypto/tls_context.hpp"

#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "crypto/client_cert.hpp"
#include "crypto/handshake.hpp"
#include "crypto/session_keys.hpp"
#include "crypto/ticket_key_file.hpp"
#include "proxy/base/log.hpp"

namespace ztp::crypto {

struct ServerTlsContext::Entry {
    std::string name;
    std::vector<std::string> server_names;
    SslCtxPtr ctx;
};

namespace {

std::string openssl_error_string() {
    unsigned long e = ERR_get_error();
    std::string out;
    while (e != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        const char* reason = ERR_reason_error_string(e);
        out += reason ? reason : buf;
        e = ERR_get_error();
    }
    return out.empty() ? "unknown OpenSSL error" : out;
}

int to_openssl_version(config::TlsVersion v) { return v == config::TlsVersion::tls1_2 ? TLS1_2_VERSION : TLS1_3_VERSION; }

// TLS 1.2 suites: ECDHE key exchange only (forward secrecy), AEADs the kernel can offload only.
std::string tls12_cipher_list(const std::vector<config::Cipher>& ciphers) {
    std::string list;
    auto add = [&](const char* s) {
        if (!list.empty()) list += ':';
        list += s;
    };
    for (auto c : ciphers) {
        switch (c) {
            case config::Cipher::aes_128_gcm:
                add("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
                break;
            case config::Cipher::aes_256_gcm:
                add("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384");
                break;
            case config::Cipher::chacha20_poly1305:
                add("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305");
                break;
        }
    }
    return list;
}

std::string tls13_suites(const std::vector<config::Cipher>& ciphers) {
    std::string list;
    for (auto c : ciphers) {
        if (!list.empty()) list += ':';
        switch (c) {
            case config::Cipher::aes_128_gcm: list += "TLS_AES_128_GCM_SHA256"; break;
            case config::Cipher::aes_256_gcm: list += "TLS_AES_256_GCM_SHA384"; break;
            case config::Cipher::chacha20_poly1305: list += "TLS_CHACHA20_POLY1305_SHA256"; break;
        }
    }
    return list;
}

bool readable(const std::string& path, std::string& why) {
    std::ifstream f(path);
    if (!f) {
        why = std::strerror(errno);
        return false;
    }
    return true;
}

// Where the listener's tickets get their keys: its key file, else the process's generated keys
// (one store for the life of the process, so a reload's new contexts still read older tickets).
std::shared_ptr<TicketKeyStore> ticket_key_store(const config::TlsSettings& tls,
                                                 std::vector<config::Diagnostic>& problems) {
    if (tls.session_ticket_keys.empty()) return TicketKeyStore::process();
    const auto& path = tls.session_ticket_keys;
    auto file = load_ticket_key_file(path);
    if (!file.error.empty()) {
        problems.push_back({tls.session_ticket_keys_loc.file.empty() ? tls.loc : tls.session_ticket_keys_loc,
                            "session ticket key file '" + path + "': " + file.error});
        return nullptr;
    }
    // Whoever reads the keys can decrypt every resumed session's secrets and mint sessions.
    if (file.world_readable)
        log::tls().warn("session ticket key file '{}' is readable by every user of this host; make it readable "
                        "by ztproxy only (chmod 600 or 640)", path);
    return std::make_shared<TicketKeyStore>(std::move(file.keys));
}

// The session id context: OpenSSL resumes a session (ticket or cache entry) only under the context
// it was made in. Ticket keys are shared by every listener of the process (and by instances sharing
// a key file), so the context names what a session's client authentication depended on: the
// client_auth mode, the verify depth and the bytes of the trusted client CA bundle. A session
// never moves to a listener that asks more of clients or trusts other CAs; between listeners with
// the same settings it may (routing is decided per connection either way). An unreadable bundle
// is reported by configure_client_auth; its digest then covers the settings alone.
std::array<unsigned char, SSL_MAX_SID_CTX_LENGTH> session_context_digest(const config::TlsSettings& tls) {
    std::string material = "ztproxy session context 1";
    material += '\0';
    material += config::to_string(tls.client_auth);
    if (tls.client_auth != config::ClientAuth::none) {
        material += '\0' + std::to_string(tls.verify_depth) + '\0';
        std::ifstream ca(tls.client_ca, std::ios::binary);
        material.append(std::istreambuf_iterator<char>(ca), std::istreambuf_iterator<char>());
    }
    static_assert(SSL_MAX_SID_CTX_LENGTH == 32, "a SHA-256 digest fills the session id context");
    std::array<unsigned char, SSL_MAX_SID_CTX_LENGTH> digest{};
    SHA256(reinterpret_cast<const unsigned char*>(material.data()), material.size(), digest.data());
    return digest;
}

}  // namespace

ServerTlsContext::~ServerTlsContext() = default;

std::shared_ptr<ServerTlsContext> ServerTlsContext::build(const config::Listener& listener, ServerNameFilter filter,
                                                          std::vector<config::Diagnostic>& problems) {
    const auto& tls = listener.tls;
    size_t problems_before = problems.size();
    auto report = [&](const config::SourceLoc& loc, std::string msg) {
        problems.push_back({loc, std::move(msg)});
    };
    std::shared_ptr<ServerTlsContext> self(new ServerTlsContext());
    self->filter_ = std::move(filter);
    for (const auto& proto : tls.alpn) {
        if (proto.empty() || proto.size() > 255) {
            report(tls.loc, "ALPN protocol names must be 1 to 255 bytes");
            continue;
        }
        self->alpn_wire_.push_back(static_cast<unsigned char>(proto.size()));
        self->alpn_wire_.insert(self->alpn_wire_.end(), proto.begin(), proto.end());
    }
    if (tls.certificates.empty()) report(listener.loc, "listener '" + listener.name + "' has no certificate");
    const config::SourceLoc& client_ca_at = tls.client_ca_loc.file.empty() ? tls.loc : tls.client_ca_loc;
    const auto ticket_keys = tls.session_tickets ? ticket_key_store(tls, problems) : nullptr;
    const auto session_context = session_context_digest(tls);
    bool client_ca_reported = false;  // one message for the bundle, not one per certificate

    for (const auto& cert : tls.certificates) {
        ERR_clear_error();
        std::string why;
        if (!readable(cert.cert_file, why)) {
            report(cert.cert_at(), "cannot read certificate '" + cert.cert_file + "': " + why);
            continue;
        }
        if (!readable(cert.key_file, why)) {
            report(cert.key_at(), "cannot read key '" + cert.key_file + "': " + why);
            continue;
        }
        auto e = std::make_unique<Entry>();
        e->name = cert.name;
        e->server_names = cert.server_names;
        e->ctx.reset(SSL_CTX_new(TLS_server_method()));
        SSL_CTX* ctx = e->ctx.get();
        if (!ctx) {
            report(cert.loc, "SSL_CTX_new failed: " + openssl_error_string());
            continue;
        }
        SSL_CTX_set_min_proto_version(ctx, to_openssl_version(tls.min_version));
        SSL_CTX_set_max_proto_version(ctx, to_openssl_version(tls.max_version));
        // Renegotiation is a DoS and downgrade vector and kTLS cannot follow it; compression
        // invites CRIME. Server preference makes the operator's cipher order count.
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
        // Partial writes + moving buffers let the relay hand SSL_write whatever it has; releasing
        // buffers keeps idle connections small. NO_AUTO_CHAIN: the chain sent is exactly the
        // certificate file (leaf first, then its intermediates, as loaded below). Without it
        // OpenSSL builds a chain from the context's trust store with X509_verify_cert on every
        // handshake whenever the file holds only the leaf, and adds certificates the operator
        // never listed (e.g. the client CA of an mTLS listener that also issued the server's).
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
        if (SSL_CTX_set_cipher_list(ctx, tls12_cipher_list(tls.ciphers).c_str()) != 1 ||
            SSL_CTX_set_ciphersuites(ctx, tls13_suites(tls.ciphers).c_str()) != 1) {
            report(tls.loc, "cipher configuration rejected: " + openssl_error_string());
            continue;
        }
        SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384");
        if (!tls.session_tickets) {
            SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
            SSL_CTX_set_num_tickets(ctx, 0);
        } else if (ticket_keys && !use_ticket_keys(ctx, ticket_keys)) {
            report(tls.loc, "cannot install the session ticket keys: " + openssl_error_string());
            continue;
        } else {
            // OpenSSL sends 2 TLS 1.3 tickets per full handshake; each is a session copy, an
            // encryption, an HMAC and a record. A client needs one per resumption.
            SSL_CTX_set_num_tickets(ctx, tls.tls13_tickets);
        }
        // TLS 1.3 resumes only with a fresh ECDHE exchange (psk_dhe_ke, OpenSSL's default, made
        // explicit): a stolen ticket key must not also decrypt recorded resumed traffic.
        SSL_CTX_clear_options(ctx, SSL_OP_ALLOW_NO_DHE_KEX);
        SSL_CTX_set_session_id_context(ctx, session_context.data(), static_cast<unsigned>(session_context.size()));

        if (SSL_CTX_use_certificate_chain_file(ctx, cert.cert_file.c_str()) != 1) {
            report(cert.cert_at(), "cannot load certificate '" + cert.cert_file + "': " + openssl_error_string());
            continue;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, cert.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
            // OpenSSL compares the key with the certificate while loading it.
            if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
                ERR_clear_error();
                report(cert.key_at(), "key '" + cert.key_file + "' does not match certificate '" + cert.cert_file + "'");
            } else {
                report(cert.key_at(), "cannot load key '" + cert.key_file + "': " + openssl_error_string());
            }
            continue;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            ERR_clear_error();
            report(cert.key_at(), "key '" + cert.key_file + "' does not match certificate '" + cert.cert_file + "'");
            continue;
        }
        // Every context a connection can start on or be switched to by SNI captures the traffic
        // secrets and record counts, so the session can leave OpenSSL after the handshake: for
        // the kernel, or for ztproxy's own record layer (record_path auto or userspace).
        if (tls.record_path != config::RecordPathMode::openssl) enable_key_capture(ctx);
        // Every context, not just the default one: SNI may switch the connection to any of them
        // before the client certificate is requested and verified.
        if (std::string why; !configure_client_auth(ctx, tls, &why)) {
            if (!client_ca_reported) report(client_ca_at, why);
            client_ca_reported = true;
            continue;
        }
        SSL_CTX_set_tlsext_servername_callback(ctx, &ServerTlsContext::on_server_name);
        SSL_CTX_set_tlsext_servername_arg(ctx, self.get());
        if (!self->alpn_wire_.empty()) SSL_CTX_set_alpn_select_cb(ctx, &ServerTlsContext::on_alpn, self.get());
        self->entries_.push_back(std::move(e));
    }
    if (problems.size() != problems_before) return nullptr;

    self->default_entry_ = self->entries_.front().get();
    for (const auto& e : self->entries_)
        if (!tls.default_certificate.empty() && e->name == tls.default_certificate) self->default_entry_ = e.get();
    return self;
}

SslPtr ServerTlsContext::new_session(int fd) const {
    ERR_clear_error();
    SslPtr ssl(SSL_new(default_entry_->ctx.get()));
    if (!ssl) return ssl;
    if (SSL_set_fd(ssl.get(), fd) != 1) return {};
    SSL_set_accept_state(ssl.get());
    return ssl;
}

SSL_CTX* ServerTlsContext::session_cache_ctx() const { return default_entry_->ctx.get(); }

const ServerTlsContext::Entry* ServerTlsContext::select(std::string_view name) const {
    for (const auto& e : entries_)  // exact names win over wildcards
        for (const auto& n : e->server_names)
            if (n == name) return e.get();
    for (const auto& e : entries_)
        for (const auto& n : e->server_names)
            if (config::server_name_matches(n, name)) return e.get();
    return nullptr;
}

int ServerTlsContext::on_server_name(SSL* ssl, int* alert, void* arg) {
    auto* self = static_cast<ServerTlsContext*>(arg);
    std::string name = lower_sni(ssl);
    if (self->filter_ && !self->filter_(name)) {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    if (!name.empty()) {
        if (const Entry* e = self->select(name); e && e != self->default_entry_)
            SSL_set_SSL_CTX(ssl, e->ctx.get());
    }
    return SSL_TLSEXT_ERR_OK;
}

int ServerTlsContext::on_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                              unsigned int inlen, void* arg) {
    auto* self = static_cast<ServerTlsContext*>(arg);
    // Server preference: the first of our protocols that the client also offers.
    const auto& ours = self->alpn_wire_;
    for (size_t i = 0; i < ours.size(); i += 1 + ours[i]) {
        for (unsigned j = 0; j < inlen; j += 1 + in[j]) {
            if (j + 1 + in[j] > inlen) break;
            if (in[j] == ours[i] && std::equal(ours.begin() + i + 1, ours.begin() + i + 1 + ours[i], in + j + 1)) {
                *out = in + j + 1;
                *outlen = in[j];
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    // RFC 7301 §3.2: no common protocol is a fatal no_application_protocol alert, so a client
    // never ends up speaking a protocol the backend was not configured for.
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

}  // namespace ztp::crypto
