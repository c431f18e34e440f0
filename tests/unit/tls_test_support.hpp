// Shared by the TLS differential tests (session keys, record layer): a throwaway ECDSA P-256
// certificate, BIO helpers and the reference nonce layout.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdint>
#include <vector>

#include "crypto/key_schedule.hpp"
#include "proxy/base/c_deleters.hpp"

namespace ztp::crypto::testing {

using Bytes = std::vector<uint8_t>;

struct TestCert {
    EvpPkeyPtr key;
    X509Ptr cert;
};

inline const TestCert& test_cert() {
    static const TestCert c = [] {
        TestCert t;
        t.key.reset(EVP_EC_gen("P-256"));
        t.cert.reset(X509_new());
        X509* x = t.cert.get();
        X509_set_version(x, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), -60);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_set_pubkey(x, t.key.get());
        X509_NAME* name = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
        X509_set_issuer_name(x, name);
        X509_sign(x, t.key.get(), EVP_sha256());
        return t;
    }();
    return c;
}

inline bool would_block(SSL* ssl, int rc) {
    const int e = SSL_get_error(ssl, rc);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

inline Bytes drain(BIO* b) {
    Bytes out;
    uint8_t buf[4096];
    int n = 0;
    while ((n = BIO_read(b, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
    return out;
}

inline Bytes reference_iv(const DirectionKeys& k, uint64_t explicit_nonce) {
    Bytes iv(k.iv.view().begin(), k.iv.view().end());
    if (iv.size() == kKtlsTls12GcmSaltSize)
        for (int i = 7; i >= 0; --i) iv.push_back(static_cast<uint8_t>(explicit_nonce >> (8 * i)));
    return iv;
}

}  // namespace ztp::crypto::testing
