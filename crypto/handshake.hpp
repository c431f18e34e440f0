// Drives a server handshake on a non-blocking socket one step at a time: the event loop calls
// step() whenever the socket is ready in the direction the previous step asked for.
#pragma once

#include <openssl/ssl.h>

#include <string>

#include "crypto/client_cert.hpp"

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

}  // namespace ztp::crypto
