// Drives a server handshake on a non-blocking socket one step at a time: the event loop calls
// step() whenever the socket is ready in the direction the previous step asked for.
#pragma once

#include <openssl/ssl.h>

#include <string>
#include <string_view>

#include "crypto/client_cert.hpp"
#include "proxy/base/c_deleters.hpp"

namespace ztp::crypto {

enum class HandshakeStatus { done, want_read, want_write, failed };

// Why a handshake failed, coarsely, for the failure counters (the log line has OpenSSL's words):
// scanners and port probes show up as not_tls/peer_closed, misconfigured clients as the others.
enum class HandshakeFailure {
    peer_closed,          // EOF or reset before the handshake finished
    not_tls,              // the bytes were not a TLS ClientHello (plain HTTP, garbage)
    protocol_version,     // no TLS version in common
    no_shared_cipher,     // no cipher suite / group in common
    unknown_server_name,  // SNI that no certificate and route takes (unrecognized_name alert)
    no_application_protocol,  // ALPN offered, none in common (RFC 7301)
    client_cert,          // mTLS: the client certificate was missing or did not verify
    other,
    count
};
const char* to_string(HandshakeFailure f);
HandshakeFailure classify_ssl_reason(int ssl_reason);

struct HandshakeStep {
    HandshakeStatus status;
    std::string error;  // set when failed: OpenSSL's reason, or the socket error
    int ssl_reason = 0;  // when failed: ERR_GET_REASON of OpenSSL's first SSL-library error, else 0
    HandshakeFailure failure = HandshakeFailure::other;  // when failed
};

HandshakeStep handshake_step(SSL* ssl);

// What the access log and routing need to know about an established session.
struct SessionInfo {
    std::string sni;      // lower case, empty when the client sent none
    std::string alpn;     // negotiated protocol, empty when none
    std::string version;  // "TLSv1.3"
    std::string cipher;   // IANA-ish OpenSSL name, e.g. "TLS_AES_128_GCM_SHA256"
    ClientCertInfo client_cert;  // mTLS: the verified client certificate, if any
};

SessionInfo session_info(SSL* ssl);
std::string lower_sni(SSL* ssl);  // available from the ClientHello on

// The reason OpenSSL gave for the last failure on this thread, and clears the queue.
std::string take_openssl_error();

// Whether a session may still be resumed after its connection ended with `close_reason` (the
// access log's close=). A clean end keeps it: the client's close_notify, or an end on our side
// (backend gone, idle timeout, shutdown) where we sent close_notify. Anything that points at a
// broken or hostile peer removes it: a fatal alert (RFC 5246 §7.2.2: the session must not be
// resumed), a record that failed authentication or did not parse, a reset or socket error, a
// KeyUpdate flood, renegotiation, or an internal failure. Reasons not known here remove it too.
bool session_resumable_after(std::string_view close_reason);

// A session's entry in the server session cache, kept after its SSL was freed. OpenSSL drops a
// session from the cache when its SSL is freed without a close_notify having gone through OpenSSL;
// once the records leave OpenSSL that is every connection, at its end. So the entry's fate is
// decided here instead: end() with the connection's close reason keeps it or removes it
// (session_resumable_after); a CachedSession destroyed without end() removes it.
class CachedSession {
public:
    CachedSession() = default;
    ~CachedSession();
    CachedSession(CachedSession&& o) noexcept;
    CachedSession& operator=(CachedSession&& o) noexcept;
    CachedSession(const CachedSession&) = delete;
    CachedSession& operator=(const CachedSession&) = delete;

    // The connection ended with `close_reason`: the cache entry stays (it expires on the
    // session timeout like any other) or goes. Idempotent; a no-op when nothing was kept.
    void end(std::string_view close_reason);

private:
    friend CachedSession free_after_offload(SslPtr ssl, SSL_CTX* session_ctx);
    void release(bool keep_entry);
    SSL_CTX* ctx_ = nullptr;          // one reference held
    SSL_SESSION* session_ = nullptr;  // one reference held
};

// Frees the SSL of a finished handshake whose keys went to another record path (kernel or our
// record layer): nothing reads or writes through it any more, and with its buffers, cipher
// contexts and handshake state it is most of an idle connection's memory. Keeps the session's
// cache entry where OpenSSL may have added one (TLS 1.2, or TLS 1.3 with stateful tickets) until
// the connection ends, so resumption behaves as on the OpenSSL record path.
// `session_ctx`: ServerTlsContext::session_cache_ctx().
CachedSession free_after_offload(SslPtr ssl, SSL_CTX* session_ctx);

// The same rule for a connection that kept its SSL to the end (the OpenSSL record path): OpenSSL
// itself forgets a session only when our close_notify had not gone out, so a client reset after it
// would leave the session resumable. Removes the session from `session_ctx`'s cache unless
// session_resumable_after(close_reason).
void end_session(SSL* ssl, SSL_CTX* session_ctx, std::string_view close_reason);

}  // namespace ztp::crypto
