// In-process generation of the demo CA and server certificate (OpenSSL 3, ECDSA P-256, SHA-256).
// The CA key never touches the disk: once the server certificate is signed it is thrown away, so
// the demo CA can vouch for nothing else.
#include "proxy/app/demo_certs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <string>
#include <system_error>

#include "proxy/base/c_deleters.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::app {

namespace {

using BignumPtr = std::unique_ptr<BIGNUM, CDeleter<BN_free>>;
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, CDeleter<X509_EXTENSION_free>>;

constexpr long kValidityDays = 30;
constexpr long kBackdateSeconds = 5 * 60;  // tolerate small clock differences with the client

// OpenSSL failures carry no errno: report code 0 and a precise `what`. The error queue is cleared
// so that a stale entry cannot be blamed on an unrelated later call.
Error ssl_error(const char* what) {
    ERR_clear_error();
    return Error{0, what};
}

Result<EvpPkeyPtr> make_key() {
    EvpPkeyPtr key(EVP_EC_gen("P-256"));
    if (!key) return ssl_error("demo certs: generating a P-256 key failed");
    return key;
}

// Adds one extension written in openssl.cnf syntax ("critical,CA:TRUE"). `issuer` may equal
// `subject` (self-signed); it must already carry its subjectKeyIdentifier for authorityKeyIdentifier.
bool add_ext(X509* subject, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, subject, nullptr, nullptr, 0);
    X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    return ext && X509_add_ext(subject, ext.get(), -1) == 1;
}

// A certificate skeleton: v3, random positive 127-bit serial, validity window, subject CN, key.
Result<X509Ptr> make_cert(EVP_PKEY* key, const char* common_name) {
    X509Ptr cert(X509_new());
    if (!cert) return ssl_error("demo certs: X509_new failed");
    BignumPtr serial(BN_new());
    if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
        !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())))
        return ssl_error("demo certs: generating a serial number failed");
    if (X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kBackdateSeconds) ||
        !X509_time_adj_ex(X509_getm_notAfter(cert.get()), static_cast<int>(kValidityDays), 0,
                          nullptr) ||
        X509_set_pubkey(cert.get(), key) != 1)
        return ssl_error("demo certs: filling in the certificate failed");
    X509_NAME* name = X509_get_subject_name(cert.get());  // owned by cert
    if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>("ztproxy demo"), -1, -1,
                                   0) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(common_name), -1, -1,
                                   0) != 1)
        return ssl_error("demo certs: setting the subject name failed");
    return cert;
}

Result<std::string> to_pem(X509* cert, EVP_PKEY* key) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio) return ssl_error("demo certs: BIO_new failed");
    int rc = cert ? PEM_write_bio_X509(bio.get(), cert)
                  : PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
    if (rc != 1) return ssl_error("demo certs: PEM encoding failed");
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    if (len <= 0 || data == nullptr) return ssl_error("demo certs: PEM encoding produced nothing");
    return std::string(data, static_cast<size_t>(len));
}

// Writes `text` to `path` with exactly `mode` (umask does not apply: fchmod), through a temporary
// file and rename, so a reader never sees a half-written key or certificate.
Result<void> write_file(const std::filesystem::path& path, const std::string& text, mode_t mode) {
    std::filesystem::path tmp = path;
    tmp += ".tmp";
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode));
    if (!fd) return errno_error("demo certs: cannot create a file in the work directory");
    if (::fchmod(fd.get(), mode) != 0) {
        Error e = errno_error("demo certs: cannot set file permissions");
        ::unlink(tmp.c_str());
        return e;
    }
    size_t off = 0;
    while (off < text.size()) {
        ssize_t n = ::write(fd.get(), text.data() + off, text.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            Error e = n < 0 ? errno_error("demo certs: writing a file failed")
                            : Error{EIO, "demo certs: writing a file failed"};
            ::unlink(tmp.c_str());
            return e;
        }
        off += static_cast<size_t>(n);
    }
    if (::close(fd.release()) != 0) {
        Error e = errno_error("demo certs: closing a written file failed");
        ::unlink(tmp.c_str());
        return e;
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        Error e = errno_error("demo certs: renaming a written file failed");
        ::unlink(tmp.c_str());
        return e;
    }
    return ok_result();
}

}  // namespace

Result<DemoCerts> generate_demo_certs(const std::filesystem::path& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Error{ec.value(), "demo certs: cannot create the work directory"};

    // CA: self-signed, CA:TRUE, may sign certificates (and CRLs) only.
    auto ca_key = make_key();
    if (!ca_key) return ca_key.error();
    auto ca = make_cert(ca_key->get(), "ztproxy demo CA");
    if (!ca) return ca.error();
    X509* ca_cert = ca->get();
    if (X509_set_issuer_name(ca_cert, X509_get_subject_name(ca_cert)) != 1 ||
        !add_ext(ca_cert, ca_cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
        !add_ext(ca_cert, ca_cert, NID_key_usage, "critical,keyCertSign,cRLSign") ||
        !add_ext(ca_cert, ca_cert, NID_subject_key_identifier, "hash"))
        return ssl_error("demo certs: adding CA extensions failed");
    if (X509_sign(ca_cert, ca_key->get(), EVP_sha256()) <= 0)
        return ssl_error("demo certs: signing the CA certificate failed");

    // Server: signed by the CA, valid for localhost and 127.0.0.1.
    auto server_key = make_key();
    if (!server_key) return server_key.error();
    auto server = make_cert(server_key->get(), "localhost");
    if (!server) return server.error();
    X509* server_cert = server->get();
    if (X509_set_issuer_name(server_cert, X509_get_subject_name(ca_cert)) != 1 ||
        !add_ext(server_cert, ca_cert, NID_basic_constraints, "critical,CA:FALSE") ||
        !add_ext(server_cert, ca_cert, NID_key_usage, "critical,digitalSignature") ||
        !add_ext(server_cert, ca_cert, NID_ext_key_usage, "serverAuth") ||
        !add_ext(server_cert, ca_cert, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1") ||
        !add_ext(server_cert, ca_cert, NID_subject_key_identifier, "hash") ||
        !add_ext(server_cert, ca_cert, NID_authority_key_identifier, "keyid:always"))
        return ssl_error("demo certs: adding server certificate extensions failed");
    if (X509_sign(server_cert, ca_key->get(), EVP_sha256()) <= 0)
        return ssl_error("demo certs: signing the server certificate failed");

    auto ca_pem = to_pem(ca_cert, nullptr);
    if (!ca_pem) return ca_pem.error();
    auto server_pem = to_pem(server_cert, nullptr);
    if (!server_pem) return server_pem.error();
    auto key_pem = to_pem(nullptr, server_key->get());
    if (!key_pem) return key_pem.error();

    DemoCerts out{dir / "ca.pem", dir / "server.pem", dir / "server.key"};
    // Key first: if it fails, no certificate is left pointing at a missing key.
    if (auto r = write_file(out.server_key, *key_pem, 0600); !r) {
        OPENSSL_cleanse(key_pem->data(), key_pem->size());
        return r.error();
    }
    OPENSSL_cleanse(key_pem->data(), key_pem->size());
    if (auto r = write_file(out.server_cert, *server_pem, 0644); !r) return r.error();
    if (auto r = write_file(out.ca_cert, *ca_pem, 0644); !r) return r.error();
    return out;
}

}  // namespace ztp::app
