#include "crypto/handshake.hpp"

#include <openssl/err.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace ztp::crypto {

std::string take_openssl_error() {
    std::string out;
    while (unsigned long e = ERR_get_error()) {
        if (!out.empty()) out += "; ";
        const char* reason = ERR_reason_error_string(e);
        out += reason ? reason : "unknown";
    }
    return out;
}

HandshakeStep handshake_step(SSL* ssl) {
    // The error queue is per thread: stale entries from another connection would be misread.
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(ssl);
    if (rc == 1) return {HandshakeStatus::done, {}};
    int err = SSL_get_error(ssl, rc);
    switch (err) {
        case SSL_ERROR_WANT_READ: return {HandshakeStatus::want_read, {}};
        case SSL_ERROR_WANT_WRITE: return {HandshakeStatus::want_write, {}};
        case SSL_ERROR_SYSCALL: {
            int e = errno;
            std::string why = take_openssl_error();
            if (why.empty()) why = e ? std::strerror(e) : "peer closed the connection during the handshake";
            return {HandshakeStatus::failed, why, 0, HandshakeFailure::peer_closed};
        }
        case SSL_ERROR_ZERO_RETURN:
            return {HandshakeStatus::failed, "peer closed the connection during the handshake", 0,
                    HandshakeFailure::peer_closed};
        default: {
            unsigned long first = ERR_peek_error();
            int reason = first != 0 && ERR_GET_LIB(first) == ERR_LIB_SSL ? ERR_GET_REASON(first) : 0;
            std::string why = take_openssl_error();
            return {HandshakeStatus::failed, why.empty() ? "handshake failed" : why, reason,
                    classify_ssl_reason(reason)};
        }
    }
}

const char* to_string(HandshakeFailure f) {
    switch (f) {
        case HandshakeFailure::peer_closed: return "peer_closed";
        case HandshakeFailure::not_tls: return "not_tls";
        case HandshakeFailure::protocol_version: return "protocol_version";
        case HandshakeFailure::no_shared_cipher: return "no_shared_cipher";
        case HandshakeFailure::unknown_server_name: return "unknown_server_name";
        case HandshakeFailure::no_application_protocol: return "no_application_protocol";
        case HandshakeFailure::client_cert: return "client_cert";
        case HandshakeFailure::other:
        case HandshakeFailure::count: break;
    }
    return "other";
}

HandshakeFailure classify_ssl_reason(int reason) {
    switch (reason) {
        case SSL_R_WRONG_VERSION_NUMBER:
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST:
        case SSL_R_PACKET_LENGTH_TOO_LONG:
        case SSL_R_RECORD_LENGTH_MISMATCH:
        case SSL_R_UNEXPECTED_MESSAGE:
        case SSL_R_LENGTH_MISMATCH:
        case SSL_R_BAD_PACKET_LENGTH:
            return HandshakeFailure::not_tls;
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_VERSION_TOO_LOW:
        case SSL_R_VERSION_TOO_HIGH:
            return HandshakeFailure::protocol_version;
        case SSL_R_NO_SHARED_CIPHER:
        case SSL_R_NO_SHARED_GROUPS:
        case SSL_R_NO_SUITABLE_KEY_SHARE:
        case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
            return HandshakeFailure::no_shared_cipher;
        // The server-name callback's fatal unrecognized_name is the only callback failure there is.
        case SSL_R_CALLBACK_FAILED:
            return HandshakeFailure::unknown_server_name;
        case SSL_R_NO_APPLICATION_PROTOCOL:
            return HandshakeFailure::no_application_protocol;
        case SSL_R_UNEXPECTED_EOF_WHILE_READING:
            return HandshakeFailure::peer_closed;
        default:
            return HandshakeFailure::other;
    }
}

std::string lower_sni(SSL* ssl) {
    const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    std::string name = sni ? sni : "";
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return name;
}

SessionInfo session_info(SSL* ssl) {
    SessionInfo info;
    info.sni = lower_sni(ssl);
    const unsigned char* alpn = nullptr;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn) info.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
    info.version = SSL_get_version(ssl);
    if (const SSL_CIPHER* c = SSL_get_current_cipher(ssl)) info.cipher = SSL_CIPHER_get_name(c);
    info.client_cert = client_cert_info(ssl);
    return info;
}

bool session_resumable_after(std::string_view close_reason) {
    // The clean endings, listed (not the bad ones): a close reason added later is treated as
    // aborted until someone decides otherwise.
    static constexpr std::string_view kClean[] = {
        "client_close",             // the client's close_notify
        "backend_close",            // the backend ended; the client got our close_notify
        "backend_reset",
        "backend_connect_failed",
        "backend_connect_timeout",
        "proxy_header_failed",
        "idle_timeout",             // we sent close_notify
        "shutdown",                 // draining: close_notify best effort
        "key_update_unsupported",   // a kernel limit, closed cleanly: nothing wrong with the session
    };
    return std::find(std::begin(kClean), std::end(kClean), close_reason) != std::end(kClean);
}

CachedSession::~CachedSession() { release(false); }

CachedSession::CachedSession(CachedSession&& o) noexcept
    : ctx_(std::exchange(o.ctx_, nullptr)), session_(std::exchange(o.session_, nullptr)) {}

CachedSession& CachedSession::operator=(CachedSession&& o) noexcept {
    if (this != &o) {
        release(false);
        ctx_ = std::exchange(o.ctx_, nullptr);
        session_ = std::exchange(o.session_, nullptr);
    }
    return *this;
}

void CachedSession::end(std::string_view close_reason) { release(session_resumable_after(close_reason)); }

void CachedSession::release(bool keep_entry) {
    if (session_ != nullptr) {
        if (!keep_entry) SSL_CTX_remove_session(ctx_, session_);
        SSL_SESSION_free(std::exchange(session_, nullptr));
    }
    if (ctx_ != nullptr) SSL_CTX_free(std::exchange(ctx_, nullptr));
}

void end_session(SSL* ssl, SSL_CTX* session_ctx, std::string_view close_reason) {
    if (ssl == nullptr || session_ctx == nullptr || session_resumable_after(close_reason)) return;
    if (SSL_SESSION* s = SSL_get_session(ssl)) SSL_CTX_remove_session(session_ctx, s);
}

CachedSession free_after_offload(SslPtr ssl, SSL_CTX* session_ctx) {
    CachedSession kept;
    if (!ssl) return kept;
    // Where OpenSSL adds server sessions to the internal cache (ssl_update_cache): TLS 1.2, and
    // TLS 1.3 only with stateful tickets (SSL_OP_NO_TICKET; we never enable early data).
    const long mode = session_ctx != nullptr ? SSL_CTX_get_session_cache_mode(session_ctx) : 0;
    const bool cached = (mode & SSL_SESS_CACHE_SERVER) != 0 && (mode & SSL_SESS_CACHE_NO_INTERNAL_STORE) == 0 &&
                        (SSL_version(ssl.get()) != TLS1_3_VERSION || (SSL_get_options(ssl.get()) & SSL_OP_NO_TICKET) != 0);
    if (cached) {
        if (SSL_SESSION* s = SSL_get1_session(ssl.get())) {
            SSL_CTX_up_ref(session_ctx);
            kept.ctx_ = session_ctx;
            kept.session_ = s;
        }
    }
    // SSL_free would drop the cache entry now (no close_notify went through OpenSSL); the
    // CachedSession decides when the connection ends instead. SSL_free writes nothing.
    SSL_set_shutdown(ssl.get(), SSL_SENT_SHUTDOWN | SSL_get_shutdown(ssl.get()));
    ssl.reset();
    return kept;
}

}  // namespace ztp::crypto
