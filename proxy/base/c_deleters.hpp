// RAII owners for OpenSSL objects: each SSL, SSL_CTX, BIO, X509 and EVP_PKEY has exactly one owner.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>

namespace ztp {

template <auto Fn>
struct CDeleter {
    template <typename T>
    void operator()(T* p) const { Fn(p); }
};

using SslPtr = std::unique_ptr<SSL, CDeleter<SSL_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, CDeleter<SSL_CTX_free>>;
using BioPtr = std::unique_ptr<BIO, CDeleter<BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, CDeleter<X509_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, CDeleter<EVP_PKEY_free>>;

}  // namespace ztp
