// Client certificates (mTLS): the listener's verification settings on an SSL_CTX, what a verified
// client certificate says about its owner (for the access log and the PROXY v2 header), and why a
// handshake was refused because of the client certificate.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <optional>
#include <string>

#include "config/policy.hpp"

namespace ztp::crypto {

// Applies client_auth / client_ca / verify_depth to `ctx` (a no-op for client_auth = "none").
// Every context a connection can be switched to by SNI must get it: OpenSSL verifies against the
// current context's trust store and sends its CA list in the CertificateRequest. Returns false
// with `why` when the CA bundle cannot be read or holds no certificate.
bool configure_client_auth(SSL_CTX* ctx, const config::TlsSettings& tls, std::string* why);

// The client certificate of an established session. Only verified certificates get here: a
// presented certificate that does not verify fails the handshake in both optional and require.
struct ClientCertInfo {
    bool presented = false;        // the session has a client certificate
    bool this_connection = false;  // sent on this connection (false: carried by a resumed session)
    long verify_result = 0;        // X509_V_OK when presented (see above)
    std::string subject;           // RFC 2253, UTF-8, most specific RDN first: "CN=alice,O=Example"
    std::string common_name;       // the subject's last (most specific) CN; empty if none or unusable
};

ClientCertInfo client_cert_info(SSL* ssl);

// Why a handshake was refused because of the client certificate; bounded set for metrics labels.
enum class ClientCertFailure : size_t { missing, untrusted, expired, invalid, count };
const char* to_string(ClientCertFailure f);  // "missing", "untrusted", "expired", "invalid"

struct ClientCertRejection {
    ClientCertFailure reason;
    std::string detail;  // X509_verify_cert_error_string(), or "no client certificate presented"
};

// `ssl_reason`: ERR_GET_REASON of the handshake's first SSL-library error (HandshakeStep). Null
// when the failure had nothing to do with the client certificate.
std::optional<ClientCertRejection> client_cert_rejection(SSL* ssl, int ssl_reason);

}  // namespace ztp::crypto
