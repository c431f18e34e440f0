#include "crypto/client_cert.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <fstream>
#include <memory>

#include "crypto/handshake.hpp"
#include "proxy/base/c_deleters.hpp"

namespace ztp::crypto {

namespace {

struct OpenSslFree {
    void operator()(unsigned char* p) const { OPENSSL_free(p); }
};

std::string subject_rfc2253(const X509_NAME* name) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio) return {};
    // RFC 2253 escaping (',', '+', '"', '\', '<', '>', ';', control characters) keeps the DN
    // unambiguous for whoever parses it; multi-byte characters stay UTF-8 instead of \XX escapes.
    if (X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) return {};
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string();
}

std::string last_common_name(const X509_NAME* name) {
    int index = -1;
    for (int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1); i >= 0;
         i = X509_NAME_get_index_by_NID(name, NID_commonName, i))
        index = i;
    if (index < 0) return {};
    const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
    unsigned char* raw = nullptr;
    int len = ASN1_STRING_to_UTF8(&raw, value);
    std::unique_ptr<unsigned char, OpenSslFree> utf8(raw);
    if (len <= 0) return {};
    // A NUL inside a CN ("admin\0.evil.example") reads as a shorter name to any receiver that
    // treats it as a C string: such a CN is not passed on (the full, escaped subject still is).
    if (std::memchr(utf8.get(), 0, static_cast<size_t>(len)) != nullptr) return {};
    return std::string(reinterpret_cast<const char*>(utf8.get()), static_cast<size_t>(len));
}

ClientCertFailure classify(long verify_error) {
    switch (verify_error) {
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_CERT_UNTRUSTED:
            return ClientCertFailure::untrusted;
        case X509_V_ERR_CERT_HAS_EXPIRED:
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return ClientCertFailure::expired;
        default:
            return ClientCertFailure::invalid;
    }
}

}  // namespace

bool configure_client_auth(SSL_CTX* ctx, const config::TlsSettings& tls, std::string* why) {
    if (tls.client_auth == config::ClientAuth::none) return true;
    const std::string& ca = tls.client_ca;
    if (std::ifstream probe(ca); !probe) {
        *why = "cannot read client_ca '" + ca + "': " + std::strerror(errno);
        return false;
    }
    ERR_clear_error();
    // The trust store decides which client certificates verify; only these CAs, never the
    // system's default paths (a public CA must not be able to mint identities for our backends).
    if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
        *why = "cannot load client_ca '" + ca + "': " + take_openssl_error();
        return false;
    }
    // The CertificateRequest names the accepted CAs, so clients holding several certificates
    // pick one we can verify. The context takes ownership of the list.
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca.c_str());
    if (!names) {
        ERR_clear_error();
        *why = "client_ca '" + ca + "' holds no certificate";
        return false;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    int mode = SSL_VERIFY_PEER;
    if (tls.client_auth == config::ClientAuth::require) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, nullptr);
    SSL_CTX_set_verify_depth(ctx, static_cast<int>(tls.verify_depth));
    // Resumption with verification needs a session id context: ServerTlsContext sets one that
    // names these settings (session_context_digest in tls_context.cpp).
    return true;
}

ClientCertInfo client_cert_info(SSL* ssl) {
    ClientCertInfo info;
    X509* cert = SSL_get0_peer_certificate(ssl);  // owned by the session
    if (!cert) return info;
    info.presented = true;
    info.this_connection = !SSL_session_reused(ssl);
    info.verify_result = SSL_get_verify_result(ssl);
    const X509_NAME* name = X509_get_subject_name(cert);
    info.subject = subject_rfc2253(name);
    info.common_name = last_common_name(name);
    return info;
}

const char* to_string(ClientCertFailure f) {
    switch (f) {
        case ClientCertFailure::missing: return "missing";
        case ClientCertFailure::untrusted: return "untrusted";
        case ClientCertFailure::expired: return "expired";
        case ClientCertFailure::invalid: return "invalid";
        case ClientCertFailure::count: break;
    }
    return "?";
}

std::optional<ClientCertRejection> client_cert_rejection(SSL* ssl, int ssl_reason) {
    if ((SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) == 0) return std::nullopt;
    if (ssl_reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        return ClientCertRejection{ClientCertFailure::missing, "no client certificate presented"};
    if (ssl_reason != SSL_R_CERTIFICATE_VERIFY_FAILED) return std::nullopt;
    long result = SSL_get_verify_result(ssl);
    if (result == X509_V_OK) return ClientCertRejection{ClientCertFailure::invalid, "certificate verify failed"};
    return ClientCertRejection{classify(result), X509_verify_cert_error_string(result)};
}

}  // namespace ztp::crypto
