// generate_demo_certs: the server certificate chains to the CA, names localhost and 127.0.0.1,
// matches its key, and the key file is private.
#include "proxy/app/demo_certs.hpp"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "proxy/base/c_deleters.hpp"

namespace {

using namespace ztp;
namespace fs = std::filesystem;

using X509StorePtr = std::unique_ptr<X509_STORE, CDeleter<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, CDeleter<X509_STORE_CTX_free>>;

class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "ztp-demo-certs-XXXXXX").string();
        char* p = ::mkdtemp(tmpl.data());
        if (p) path_ = p;
    }
    ~TempDir() {
        std::error_code ec;
        if (!path_.empty()) fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

X509Ptr read_cert(const fs::path& p) {
    BioPtr bio(BIO_new_file(p.c_str(), "r"));
    if (!bio) return nullptr;
    return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

EvpPkeyPtr read_key(const fs::path& p) {
    BioPtr bio(BIO_new_file(p.c_str(), "r"));
    if (!bio) return nullptr;
    return EvpPkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

struct Generated {
    TempDir dir;
    app::DemoCerts certs;
    X509Ptr ca, server;
    EvpPkeyPtr key;
};

void generate(Generated& g, const fs::path& sub = "certs") {
    ASSERT_FALSE(g.dir.path().empty());
    auto r = app::generate_demo_certs(g.dir.path() / sub);  // also creates the directory
    ASSERT_TRUE(r.ok()) << r.error().message();
    g.certs = r.value();
    g.ca = read_cert(g.certs.ca_cert);
    g.server = read_cert(g.certs.server_cert);
    g.key = read_key(g.certs.server_key);
    ASSERT_TRUE(g.ca && g.server && g.key);
}

int verify(X509* ca, X509* leaf, const char* host, const char* ip) {
    X509StorePtr store(X509_STORE_new());
    X509_STORE_add_cert(store.get(), ca);
    X509StoreCtxPtr ctx(X509_STORE_CTX_new());
    X509_STORE_CTX_init(ctx.get(), store.get(), leaf, nullptr);
    X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
    X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
    if (host) X509_VERIFY_PARAM_set1_host(param, host, 0);
    if (ip) X509_VERIFY_PARAM_set1_ip_asc(param, ip);
    if (X509_verify_cert(ctx.get()) == 1) return X509_V_OK;
    return X509_STORE_CTX_get_error(ctx.get());
}

TEST(DemoCerts, ServerCertificateVerifiesAgainstTheCa) {
    Generated g;
    generate(g);
    EXPECT_EQ(verify(g.ca.get(), g.server.get(), "localhost", nullptr), X509_V_OK);
    EXPECT_EQ(verify(g.ca.get(), g.server.get(), nullptr, "127.0.0.1"), X509_V_OK);
    EXPECT_NE(verify(g.ca.get(), g.server.get(), "example.com", nullptr), X509_V_OK);
}

TEST(DemoCerts, DoesNotVerifyAgainstAnotherCa) {
    Generated a, b;
    generate(a);
    generate(b);
    EXPECT_NE(verify(b.ca.get(), a.server.get(), "localhost", nullptr), X509_V_OK);
}

TEST(DemoCerts, CaIsACaAndLeafIsNot) {
    Generated g;
    generate(g);
    EXPECT_EQ(X509_check_ca(g.ca.get()), 1);
    EXPECT_EQ(X509_check_ca(g.server.get()), 0);
    EXPECT_TRUE(X509_get_key_usage(g.ca.get()) & KU_KEY_CERT_SIGN);
    EXPECT_FALSE(X509_get_key_usage(g.server.get()) & KU_KEY_CERT_SIGN);
}

TEST(DemoCerts, SanHasLocalhostAndLoopbackIp) {
    Generated g;
    generate(g);
    auto* sans = static_cast<GENERAL_NAMES*>(
        X509_get_ext_d2i(g.server.get(), NID_subject_alt_name, nullptr, nullptr));
    ASSERT_NE(sans, nullptr);
    bool dns = false, ip = false;
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
        const GENERAL_NAME* n = sk_GENERAL_NAME_value(sans, i);
        if (n->type == GEN_DNS) {
            std::string v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(n->d.dNSName)),
                          ASN1_STRING_length(n->d.dNSName));
            dns = dns || v == "localhost";
        } else if (n->type == GEN_IPADD) {
            const unsigned char* d = ASN1_STRING_get0_data(n->d.iPAddress);
            ip = ip || (ASN1_STRING_length(n->d.iPAddress) == 4 && d[0] == 127 && d[1] == 0 &&
                        d[2] == 0 && d[3] == 1);
        }
    }
    GENERAL_NAMES_free(sans);
    EXPECT_TRUE(dns);
    EXPECT_TRUE(ip);
}

TEST(DemoCerts, KeyMatchesCertificateAndIsP256) {
    Generated g;
    generate(g);
    EXPECT_EQ(X509_check_private_key(g.server.get(), g.key.get()), 1);
    EXPECT_TRUE(EVP_PKEY_is_a(g.key.get(), "EC"));
    char group[64] = {};
    size_t len = 0;
    ASSERT_EQ(EVP_PKEY_get_utf8_string_param(g.key.get(), "group", group, sizeof(group), &len), 1);
    EXPECT_STREQ(group, "prime256v1");
}

TEST(DemoCerts, ValidForAboutThirtyDays) {
    Generated g;
    generate(g);
    int days = 0, secs = 0;
    ASSERT_EQ(ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(g.server.get())), 1);
    EXPECT_GE(days, 29);
    EXPECT_LE(days, 30);
    ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(g.server.get()), nullptr), 1);
    EXPECT_GE(days * 86400 + secs, 0);  // already valid
}

TEST(DemoCerts, KeyFileIsPrivate) {
    Generated g;
    generate(g);
    struct stat st {};
    ASSERT_EQ(::stat(g.certs.server_key.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600);
}

TEST(DemoCerts, RegeneratingOverwritesAndKeepsKeyPrivate) {
    Generated g;
    generate(g);
    ASSERT_EQ(::chmod(g.certs.server_key.c_str(), 0644), 0);
    auto r = app::generate_demo_certs(g.dir.path() / "certs");
    ASSERT_TRUE(r.ok()) << r.error().message();
    struct stat st {};
    ASSERT_EQ(::stat(r.value().server_key.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600);
    X509Ptr ca = read_cert(r.value().ca_cert);
    ASSERT_TRUE(ca);
    EXPECT_NE(X509_cmp(ca.get(), g.ca.get()), 0);  // a fresh CA each time
}

TEST(DemoCerts, UnwritableDirectoryIsAnError) {
    TempDir d;
    ASSERT_FALSE(d.path().empty());
    fs::path file = d.path() / "not-a-dir";
    FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
    auto r = app::generate_demo_certs(file / "sub");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(std::string(r.error().what), "");
}

}  // namespace
