// crypto/key_schedule + crypto/secret: RFC 8448 §3 vectors for HKDF-Expand-Label and the TLS 1.3
// traffic keys, "traffic upd" and the TLS 1.2 key block against a second, independent HMAC-based
// computation written out here. (session_keys_test.cpp checks all of it against OpenSSL's own
// record layer.)
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "crypto/key_schedule.hpp"
#include "crypto/secret.hpp"

namespace ztp::crypto {
namespace {

using Bytes = std::vector<uint8_t>;

// "9f 02 28 3b ..." (spaces and newlines ignored) → bytes.
Bytes hex(std::string_view s) {
    Bytes out;
    int hi = -1;
    for (char c : s) {
        int v = -1;
        if (c >= '0' && c <= '9') v = c - '0';
        if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
        if (v < 0) continue;
        if (hi < 0) {
            hi = v;
        } else {
            out.push_back(static_cast<uint8_t>(hi << 4 | v));
            hi = -1;
        }
    }
    return out;
}

Bytes bytes(std::span<const uint8_t> s) { return Bytes(s.begin(), s.end()); }

// ---------------------------------------------------------------------------------------------
// SecretBytes

// The type must never reach a log line: no formatter, no ostream operator, no range interface.
static_assert(!fmt::is_formattable<SecretBytes>::value, "SecretBytes must not be formattable");
static_assert(!std::is_copy_constructible_v<SecretBytes>);
static_assert(!std::is_copy_assignable_v<SecretBytes>);
static_assert(std::is_nothrow_move_constructible_v<SecretBytes>);
static_assert(!std::is_convertible_v<SecretBytes, std::span<const uint8_t>>);
static_assert(!std::is_convertible_v<SecretBytes, std::string_view>);

TEST(SecretBytes, IsNotFormattable) { EXPECT_FALSE(fmt::is_formattable<SecretBytes>::value); }

TEST(SecretBytes, MoveScrubsTheSource) {
    const Bytes k = hex("01 02 03 04 05 06 07 08");
    SecretBytes a;
    ASSERT_TRUE(a.assign(k));
    EXPECT_EQ(a.size(), 8u);
    SecretBytes b(std::move(a));
    EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): checking the scrub is the point
    EXPECT_TRUE(b.equals(k));
    SecretBytes c;
    c = std::move(b);
    EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move)
    EXPECT_TRUE(c.equals(k));
    EXPECT_EQ(bytes(c.view()), k);
    c.reset();
    EXPECT_TRUE(c.empty());
    EXPECT_TRUE(c.view().empty());
}

TEST(SecretBytes, RefusesOversizedInput) {
    SecretBytes s;
    const Bytes big(SecretBytes::kCapacity + 1, 0xaa);
    EXPECT_FALSE(s.assign(big));
    EXPECT_TRUE(s.empty());
    EXPECT_TRUE(s.writable(SecretBytes::kCapacity + 1).empty());
    EXPECT_EQ(s.writable(SecretBytes::kCapacity).size(), SecretBytes::kCapacity);
    EXPECT_FALSE(s.equals(big));
}

// ---------------------------------------------------------------------------------------------
// RFC 8448 §3 (Simple 1-RTT Handshake), TLS_AES_128_GCM_SHA256. Constants copied from the RFC text
// ({server} derive secret "tls13 s ap traffic" / "tls13 c ap traffic", {server} derive write / read
// traffic keys for application data, {server} derive secret for handshake "tls13 derived").

const Bytes kServerApSecret =
    hex("a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43");
const Bytes kServerApKey = hex("9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56");
const Bytes kServerApIv = hex("cf 78 2b 88 dd 83 54 9a ad f1 e9 84");
const Bytes kClientApSecret =
    hex("9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5");
const Bytes kClientApKey = hex("17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51");
const Bytes kClientApIv = hex("5b 78 92 3d ee 08 57 90 33 e5 23 d9");
const Bytes kEarlySecret =
    hex("33 ad 0a 1c 60 7e c0 3b 09 e6 cd 98 93 68 0c e2 10 ad f3 00 aa 1f 26 60 e1 b2 2e 10 f1 70 f9 2a");
const Bytes kEmptyHashSha256 =
    hex("e3 b0 c4 42 98 fc 1c 14 9a fb f4 c8 99 6f b9 24 27 ae 41 e4 64 9b 93 4c a4 95 99 1b 78 52 b8 55");
const Bytes kDerivedForHandshake =
    hex("6f 26 15 a1 08 c7 02 c5 67 8f 54 fc 9d ba b6 97 16 c0 76 18 9c 48 25 0c eb ea c3 57 6c 36 11 ba");
// RFC 8448 §3: {server} derive read traffic keys for handshake data (key from the client handshake
// traffic secret) — a second key/iv pair to pin the label encoding.
const Bytes kClientHsSecret =
    hex("b3 ed db 12 6e 06 7f 35 a7 80 b3 ab f4 5e 2d 8f 3b 1a 95 07 38 f5 2e 96 00 74 6a 0e 27 a5 5a 21");
const Bytes kClientHsKey = hex("db fa a6 93 d1 76 2c 5b 66 6a f5 d9 50 25 8d 01");
const Bytes kClientHsIv = hex("5b d3 c7 1b 83 6e 0b 76 bb 73 26 5f");

TEST(KeySchedule, Rfc8448ServerApplicationKeys) {
    auto k = tls13_traffic_keys(config::Cipher::aes_128_gcm, kServerApSecret);
    ASSERT_TRUE(k) << k.error().message();
    EXPECT_EQ(k->version, config::TlsVersion::tls1_3);
    EXPECT_EQ(k->cipher, config::Cipher::aes_128_gcm);
    EXPECT_EQ(bytes(k->key.view()), kServerApKey);
    EXPECT_EQ(bytes(k->iv.view()), kServerApIv);
    EXPECT_EQ(k->seq, 0u);
}

TEST(KeySchedule, Rfc8448ClientApplicationKeys) {
    auto k = tls13_traffic_keys(config::Cipher::aes_128_gcm, kClientApSecret);
    ASSERT_TRUE(k) << k.error().message();
    EXPECT_EQ(bytes(k->key.view()), kClientApKey);
    EXPECT_EQ(bytes(k->iv.view()), kClientApIv);
}

TEST(KeySchedule, Rfc8448ClientHandshakeKeys) {
    auto key = hkdf_expand_label(EVP_sha256(), kClientHsSecret, "key", {}, 16);
    auto iv = hkdf_expand_label(EVP_sha256(), kClientHsSecret, "iv", {}, 12);
    ASSERT_TRUE(key && iv);
    EXPECT_EQ(bytes(key->view()), kClientHsKey);
    EXPECT_EQ(bytes(iv->view()), kClientHsIv);
}

TEST(KeySchedule, Rfc8448DerivedSecretUsesContext) {
    // Derive-Secret(early_secret, "derived", "") = HKDF-Expand-Label(., "derived", SHA-256(""), 32).
    auto d = hkdf_expand_label(EVP_sha256(), kEarlySecret, "derived", kEmptyHashSha256, 32);
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_EQ(bytes(d->view()), kDerivedForHandshake);
}

// ---------------------------------------------------------------------------------------------
// An independent HKDF-Expand (RFC 5869 §2.3) over HMAC, and the HkdfLabel written out by hand.

Bytes hmac(const EVP_MD* md, std::span<const uint8_t> key, std::span<const uint8_t> data) {
    Bytes out(EVP_MAX_MD_SIZE);
    unsigned len = 0;
    HMAC(md, key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(), &len);
    out.resize(len);
    return out;
}

Bytes hkdf_expand_reference(const EVP_MD* md, std::span<const uint8_t> prk, const Bytes& info, size_t len) {
    Bytes out, t;
    for (uint8_t i = 1; out.size() < len; ++i) {
        Bytes in = t;
        in.insert(in.end(), info.begin(), info.end());
        in.push_back(i);
        t = hmac(md, prk, in);
        out.insert(out.end(), t.begin(), t.end());
    }
    out.resize(len);
    return out;
}

Bytes traffic_upd_info(uint16_t len) {
    // HkdfLabel { uint16 length; opaque label<7..255> = "tls13 traffic upd"; opaque context<0..255> = "" }
    Bytes info{static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len), 17};
    for (char c : std::string_view("tls13 traffic upd")) info.push_back(static_cast<uint8_t>(c));
    info.push_back(0);
    return info;
}

TEST(KeySchedule, TrafficUpdateSha256MatchesIndependentHkdf) {
    auto next = tls13_next_traffic_secret(config::Cipher::aes_128_gcm, kServerApSecret);
    ASSERT_TRUE(next) << next.error().message();
    EXPECT_EQ(bytes(next->view()),
              hkdf_expand_reference(EVP_sha256(), kServerApSecret, traffic_upd_info(32), 32));
    // Same hash for CHACHA20-POLY1305.
    auto chacha = tls13_next_traffic_secret(config::Cipher::chacha20_poly1305, kServerApSecret);
    ASSERT_TRUE(chacha);
    EXPECT_TRUE(chacha->equals(next->view()));
    // And the reference is sane: it reproduces the RFC 8448 key with the "key" label.
    Bytes key_info{0, 16, 9};
    for (char c : std::string_view("tls13 key")) key_info.push_back(static_cast<uint8_t>(c));
    key_info.push_back(0);
    EXPECT_EQ(hkdf_expand_reference(EVP_sha256(), kServerApSecret, key_info, 16), kServerApKey);
}

TEST(KeySchedule, TrafficUpdateSha384MatchesIndependentHkdf) {
    Bytes secret(48);
    for (size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<uint8_t>(0x40 + i);
    auto next = tls13_next_traffic_secret(config::Cipher::aes_256_gcm, secret);
    ASSERT_TRUE(next) << next.error().message();
    EXPECT_EQ(next->size(), 48u);
    EXPECT_EQ(bytes(next->view()), hkdf_expand_reference(EVP_sha384(), secret, traffic_upd_info(48), 48));
    auto keys = tls13_traffic_keys(config::Cipher::aes_256_gcm, next->view());
    ASSERT_TRUE(keys);
    EXPECT_EQ(keys->key.size(), 32u);
    EXPECT_EQ(keys->iv.size(), 12u);
}

TEST(KeySchedule, RejectsSecretOfTheWrongSuite) {
    // A 32-byte (SHA-256) secret is not a TLS_AES_256_GCM_SHA384 secret.
    auto k = tls13_traffic_keys(config::Cipher::aes_256_gcm, kServerApSecret);
    ASSERT_FALSE(k);
    EXPECT_EQ(k.error().code, EINVAL);
    auto n = tls13_next_traffic_secret(config::Cipher::aes_256_gcm, kServerApSecret);
    ASSERT_FALSE(n);
    EXPECT_EQ(n.error().code, EINVAL);
    auto big = hkdf_expand_label(EVP_sha256(), kServerApSecret, "key", {}, SecretBytes::kCapacity + 1);
    EXPECT_FALSE(big);
    auto none = hkdf_expand_label(EVP_sha256(), {}, "key", {}, 16);
    EXPECT_FALSE(none);
}

TEST(KeySchedule, SuiteHashes) {
    EXPECT_EQ(tls13_hash(config::Cipher::aes_128_gcm), EVP_sha256());
    EXPECT_EQ(tls13_hash(config::Cipher::chacha20_poly1305), EVP_sha256());
    EXPECT_EQ(tls13_hash(config::Cipher::aes_256_gcm), EVP_sha384());
    EXPECT_EQ(tls13_hash_size(config::Cipher::aes_128_gcm), 32u);
    EXPECT_EQ(tls13_hash_size(config::Cipher::aes_256_gcm), 48u);
}

// ---------------------------------------------------------------------------------------------
// TLS 1.2 key block against an independent P_hash (RFC 5246 §5) over HMAC.

Bytes p_hash(const EVP_MD* md, std::span<const uint8_t> secret, const Bytes& seed, size_t len) {
    Bytes out;
    Bytes a = seed;  // A(0)
    while (out.size() < len) {
        a = hmac(md, secret, a);  // A(i)
        Bytes in = a;
        in.insert(in.end(), seed.begin(), seed.end());
        Bytes block = hmac(md, secret, in);
        out.insert(out.end(), block.begin(), block.end());
    }
    out.resize(len);
    return out;
}

class Tls12KeyBlock : public ::testing::TestWithParam<config::Cipher> {};

TEST_P(Tls12KeyBlock, MatchesIndependentPrf) {
    const config::Cipher cipher = GetParam();
    Bytes master(48), client_random(32), server_random(32);
    for (size_t i = 0; i < 48; ++i) master[i] = static_cast<uint8_t>(i * 7 + 1);
    for (size_t i = 0; i < 32; ++i) client_random[i] = static_cast<uint8_t>(0xc0 + i);
    for (size_t i = 0; i < 32; ++i) server_random[i] = static_cast<uint8_t>(0x50 + i);

    auto kb = tls12_key_block(cipher, master, client_random, server_random);
    ASSERT_TRUE(kb) << kb.error().message();
    const auto& [cw, sw] = kb.value();

    const size_t key_len = cipher == config::Cipher::aes_128_gcm ? 16 : 32;
    const size_t iv_len = cipher == config::Cipher::chacha20_poly1305 ? 12 : 4;
    const EVP_MD* md = cipher == config::Cipher::aes_256_gcm ? EVP_sha384() : EVP_sha256();
    Bytes seed;
    for (char c : std::string_view("key expansion")) seed.push_back(static_cast<uint8_t>(c));
    seed.insert(seed.end(), server_random.begin(), server_random.end());
    seed.insert(seed.end(), client_random.begin(), client_random.end());
    const Bytes block = p_hash(md, master, seed, 2 * key_len + 2 * iv_len);
    auto slice = [&](size_t off, size_t n) { return Bytes(block.begin() + off, block.begin() + off + n); };

    EXPECT_EQ(bytes(cw.key.view()), slice(0, key_len));
    EXPECT_EQ(bytes(sw.key.view()), slice(key_len, key_len));
    EXPECT_EQ(bytes(cw.iv.view()), slice(2 * key_len, iv_len));
    EXPECT_EQ(bytes(sw.iv.view()), slice(2 * key_len + iv_len, iv_len));
    for (const DirectionKeys* k : {&cw, &sw}) {
        EXPECT_EQ(k->version, config::TlsVersion::tls1_2);
        EXPECT_EQ(k->cipher, cipher);
        EXPECT_EQ(k->seq, 0u);
    }
}

INSTANTIATE_TEST_SUITE_P(AllCiphers, Tls12KeyBlock,
                         ::testing::Values(config::Cipher::aes_128_gcm, config::Cipher::aes_256_gcm,
                                           config::Cipher::chacha20_poly1305));

TEST(KeySchedule, Tls12RejectsBadSizes) {
    const Bytes r(32, 1), m(48, 2);
    EXPECT_EQ(tls12_key_block(config::Cipher::aes_128_gcm, Bytes(47, 2), r, r).error().code, EINVAL);
    EXPECT_EQ(tls12_key_block(config::Cipher::aes_128_gcm, m, Bytes(31, 1), r).error().code, EINVAL);
    EXPECT_EQ(tls12_key_block(config::Cipher::aes_128_gcm, m, r, Bytes(33, 1)).error().code, EINVAL);
}

}  // namespace
}  // namespace ztp::crypto
