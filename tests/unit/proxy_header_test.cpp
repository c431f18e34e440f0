// The PROXY protocol v2 header (proxy/conn/proxy_header.hpp) against the layout of HAProxy's
// doc/proxy-protocol.txt: one header spelled out byte for byte, the rest through a small decoder
// written here from the spec (test code only: the product never parses these headers).
#include "proxy/conn/proxy_header.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace ztp::conn::pp2 {
namespace {

SocketAddress addr(const char* text) { return *SocketAddress::parse(text); }

crypto::SessionInfo tls13(std::string alpn = "h2") {
    crypto::SessionInfo s;
    s.sni = "a.example";
    s.alpn = std::move(alpn);
    s.version = "TLSv1.3";
    s.cipher = "TLS_AES_128_GCM_SHA256";
    return s;
}

crypto::SessionInfo with_client_cert(crypto::SessionInfo s, std::string subject, std::string cn) {
    s.client_cert.presented = true;
    s.client_cert.this_connection = true;
    s.client_cert.verify_result = 0;
    s.client_cert.subject = std::move(subject);
    s.client_cert.common_name = std::move(cn);
    return s;
}

void append(std::vector<uint8_t>& v, std::string_view s) { v.insert(v.end(), s.begin(), s.end()); }

std::vector<uint8_t> encoded(const SocketAddress& src, const SocketAddress& dst, const crypto::SessionInfo& s) {
    auto r = encode(src, dst, s);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
    return r.ok() ? r.value() : std::vector<uint8_t>{};
}

uint16_t be16(const std::vector<uint8_t>& v, size_t at) { return static_cast<uint16_t>(v[at] << 8 | v[at + 1]); }

// type -> value; SSL sub-TLVs are keyed 0x2000 | subtype, the SSL client byte and verify word
// under 0x1000 / 0x1001 (as decimal strings).
using Tlvs = std::map<unsigned, std::string>;

void decode_tlvs(const std::vector<uint8_t>& v, size_t from, size_t to, Tlvs& out, unsigned key_base) {
    size_t i = from;
    while (i < to) {
        ASSERT_LE(i + 3, to) << "TLV header runs past its container";
        const uint8_t type = v[i];
        const size_t len = be16(v, i + 1);
        ASSERT_LE(i + 3 + len, to) << "TLV 0x" << std::hex << unsigned(type) << " runs past its container";
        ASSERT_EQ(out.count(key_base | type), 0u) << "TLV repeated";
        const auto* value = reinterpret_cast<const char*>(v.data() + i + 3);
        out[key_base | type] = std::string(value, len);
        if (key_base == 0 && type == kTypeSsl) {
            ASSERT_GE(len, 5u);
            out[0x1000] = std::to_string(v[i + 3]);
            out[0x1001] = std::to_string(uint32_t(v[i + 4]) << 24 | uint32_t(v[i + 5]) << 16 |
                                         uint32_t(v[i + 6]) << 8 | v[i + 7]);
            decode_tlvs(v, i + 8, i + 3 + len, out, 0x2000);
        }
        i += 3 + len;
    }
    ASSERT_EQ(i, to);
}

struct Decoded {
    uint8_t family = 0;
    size_t address_size = 0;
    Tlvs tlvs;
};

Decoded decode(const std::vector<uint8_t>& v) {
    Decoded d;
    EXPECT_GE(v.size(), kFixedSize);
    if (v.size() < kFixedSize) return d;
    EXPECT_TRUE(std::equal(std::begin(kSignature), std::end(kSignature), v.begin()));
    EXPECT_EQ(v[12], 0x21) << "version 2, command PROXY";
    d.family = v[13];
    EXPECT_EQ(be16(v, 14) + kFixedSize, v.size()) << "the length field covers exactly the rest";
    d.address_size = d.family == kTcpIpv4 ? 12 : 36;
    decode_tlvs(v, kFixedSize + d.address_size, v.size(), d.tlvs, 0);
    return d;
}

TEST(ProxyHeader, Ipv4WithClientCertificateByteForByte) {
    auto header = encoded(addr("192.0.2.10:51000"), addr("198.51.100.1:443"),
                          with_client_cert(tls13(), "CN=alice,O=Example", "alice"));
    std::vector<uint8_t> want(std::begin(kSignature), std::end(kSignature));
    want.insert(want.end(), {0x21, 0x11, 0x00, 0x65});           // v2 PROXY, TCP/IPv4, 101 bytes follow
    want.insert(want.end(), {192, 0, 2, 10, 198, 51, 100, 1});   // source, destination
    want.insert(want.end(), {0xC7, 0x38, 0x01, 0xBB});           // ports 51000, 443
    want.insert(want.end(), {0x01, 0x00, 0x02});                 // ALPN
    append(want, "h2");
    want.insert(want.end(), {0x02, 0x00, 0x09});                 // AUTHORITY
    append(want, "a.example");
    want.insert(want.end(), {0x20, 0x00, 0x30});                 // SSL, 48 bytes
    want.insert(want.end(), {0x07, 0x00, 0x00, 0x00, 0x00});     // SSL | CERT_CONN | CERT_SESS, verified
    want.insert(want.end(), {0x21, 0x00, 0x07});                 // VERSION
    append(want, "TLSv1.3");
    want.insert(want.end(), {0x22, 0x00, 0x05});                 // CN
    append(want, "alice");
    want.insert(want.end(), {0x23, 0x00, 0x16});                 // CIPHER
    append(want, "TLS_AES_128_GCM_SHA256");
    want.insert(want.end(), {0xE0, 0x00, 0x12});                 // ztproxy CLIENT_SUBJECT
    append(want, "CN=alice,O=Example");
    EXPECT_EQ(header, want);
}

TEST(ProxyHeader, Ipv6AddressesAndPorts) {
    auto header = encoded(addr("[2001:db8::1]:40000"), addr("[2001:db8::ff]:8443"), tls13());
    ASSERT_GE(header.size(), kFixedSize + 36);
    EXPECT_EQ(header[13], kTcpIpv6);
    const std::vector<uint8_t> src(header.begin() + 16, header.begin() + 32);
    const std::vector<uint8_t> dst(header.begin() + 32, header.begin() + 48);
    EXPECT_EQ(src, (std::vector<uint8_t>{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01}));
    EXPECT_EQ(dst, (std::vector<uint8_t>{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff}));
    EXPECT_EQ(be16(header, 48), 40000);
    EXPECT_EQ(be16(header, 50), 8443);
    auto d = decode(header);
    EXPECT_EQ(d.tlvs[kTypeAlpn], "h2");
    EXPECT_EQ(d.tlvs[0x2000 | kSubtypeSslVersion], "TLSv1.3");
}

TEST(ProxyHeader, Ipv4MappedPairsAreSentAsIpv4) {
    auto header = encoded(addr("[::ffff:10.1.2.3]:1000"), addr("[::ffff:10.9.9.9]:443"), tls13());
    ASSERT_GE(header.size(), kFixedSize + 12);
    EXPECT_EQ(header[13], kTcpIpv4);
    EXPECT_EQ(std::vector<uint8_t>(header.begin() + 16, header.begin() + 24),
              (std::vector<uint8_t>{10, 1, 2, 3, 10, 9, 9, 9}));
    decode(header);
}

TEST(ProxyHeader, MixedFamiliesAreRefused) {
    auto r = encode(addr("10.0.0.1:1"), addr("[2001:db8::1]:2"), tls13());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, EAFNOSUPPORT);
}

TEST(ProxyHeader, WithoutAlpnSniOrClientCertificate) {
    auto s = tls13("");
    s.sni.clear();
    auto d = decode(encoded(addr("127.0.0.1:5000"), addr("127.0.0.1:8443"), s));
    EXPECT_EQ(d.family, kTcpIpv4);
    EXPECT_EQ(d.tlvs.count(kTypeAlpn), 0u);
    EXPECT_EQ(d.tlvs.count(kTypeAuthority), 0u);
    EXPECT_EQ(d.tlvs.count(kTypeClientSubject), 0u);
    EXPECT_EQ(d.tlvs.count(0x2000 | kSubtypeSslCn), 0u);
    EXPECT_EQ(d.tlvs[0x1000], std::to_string(kClientSsl)) << "SSL only: no client certificate";
    EXPECT_EQ(d.tlvs[0x1001], std::to_string(kVerifyNoCertificate)) << "non-zero: nothing was verified";
    EXPECT_EQ(d.tlvs[0x2000 | kSubtypeSslCipher], "TLS_AES_128_GCM_SHA256");
}

TEST(ProxyHeader, ResumedSessionHasTheCertificateButNotOnThisConnection) {
    auto s = with_client_cert(tls13(), "CN=bob", "bob");
    s.client_cert.this_connection = false;
    auto d = decode(encoded(addr("127.0.0.1:5000"), addr("127.0.0.1:8443"), s));
    EXPECT_EQ(d.tlvs[0x1000], std::to_string(kClientSsl | kClientCertSess));
    EXPECT_EQ(d.tlvs[0x1001], "0");
    EXPECT_EQ(d.tlvs[0x2000 | kSubtypeSslCn], "bob");
}

TEST(ProxyHeader, CertificateWithoutUsableCnStillCarriesTheSubject) {
    auto d = decode(encoded(addr("127.0.0.1:5000"), addr("127.0.0.1:8443"),
                            with_client_cert(tls13(), "O=No Common Name", "")));
    EXPECT_EQ(d.tlvs.count(0x2000 | kSubtypeSslCn), 0u);
    EXPECT_EQ(d.tlvs[kTypeClientSubject], "O=No Common Name");
    EXPECT_EQ(d.tlvs[0x1000], std::to_string(kClientSsl | kClientCertConn | kClientCertSess));
}

TEST(ProxyHeader, LongSubjectUpToTheLengthLimit) {
    // The largest subject that still fits: 16-bit header length minus addresses and other TLVs.
    const auto base = with_client_cert(tls13(), "", "cn");
    const size_t without_subject = encoded(addr("127.0.0.1:1"), addr("127.0.0.1:2"), base).size();
    const size_t room = kMaxSize - without_subject - 3;  // the subject TLV's own type and length
    auto big = with_client_cert(tls13(), std::string(room, 'x'), "cn");
    auto header = encoded(addr("127.0.0.1:1"), addr("127.0.0.1:2"), big);
    EXPECT_EQ(header.size(), kMaxSize);
    EXPECT_EQ(decode(header).tlvs[kTypeClientSubject].size(), room);

    auto too_big = with_client_cert(tls13(), std::string(room + 1, 'x'), "cn");
    auto r = encode(addr("127.0.0.1:1"), addr("127.0.0.1:2"), too_big);
    ASSERT_FALSE(r.ok()) << "a truncated identity is a different identity: refuse instead";
    EXPECT_EQ(r.error().code, EMSGSIZE);
}

TEST(ProxyHeader, OversizedSingleValueIsRefused) {
    auto s = with_client_cert(tls13(), "CN=x", std::string(70000, 'c'));  // a sub-TLV past 16 bits
    auto r = encode(addr("127.0.0.1:1"), addr("127.0.0.1:2"), s);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, EMSGSIZE);
}

}  // namespace
}  // namespace ztp::conn::pp2
