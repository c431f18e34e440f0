// crypto/ktls_key_update, the socket-free half of following TLS 1.3 KeyUpdates on kTLS. What it
// proves on a host without kTLS: the KeyUpdate chain derives the same keys as the TLS 1.3 key
// schedule generation after generation, the userspace path's rate limit applies to the kernel path
// too, and every post-handshake record a client may not send is refused with the close reason the
// access log shows. The keys against OpenSSL itself are in session_keys_test.cpp
// (SessionKeysKeyUpdate.KtlsKeyUpdatesFollowOpenSsl).
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <vector>

#include "crypto/key_schedule.hpp"
#include "crypto/ktls_key_update.hpp"

namespace ztp::crypto {
namespace {

using Bytes = std::vector<uint8_t>;
using config::Cipher;
using config::TlsVersion;
using Clock = KtlsKeyUpdates::Clock;

constexpr std::array<uint8_t, 5> kUpdateNotRequested{24, 0, 0, 1, 0};
constexpr std::array<uint8_t, 5> kUpdateRequested{24, 0, 0, 1, 1};

SecretBytes secret_of(size_t n, uint8_t seed) {
    Bytes b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + 7 * i);
    SecretBytes s;
    EXPECT_TRUE(s.assign(b));
    return s;
}

SecretBytes copy_of(const SecretBytes& s) {
    SecretBytes c;
    EXPECT_TRUE(c.assign(s.view()));
    return c;
}

KtlsKeyUpdates tls13(Cipher c = Cipher::aes_128_gcm) {
    const size_t hs = tls13_hash_size(c);
    return KtlsKeyUpdates(TlsVersion::tls1_3, c, secret_of(hs, 1), secret_of(hs, 2));
}

const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);

// Generation after generation, the keys handed out are tls13_traffic_keys(traffic upd^n(secret)),
// with sequence 0, and RX and TX advance independently.
TEST(KtlsKeyUpdates, ChainFollowsTheKeySchedule) {
    for (Cipher c : {Cipher::aes_128_gcm, Cipher::aes_256_gcm, Cipher::chacha20_poly1305}) {
        SCOPED_TRACE(static_cast<int>(c));
        const size_t hs = tls13_hash_size(c);
        SecretBytes rx = secret_of(hs, 1), tx = secret_of(hs, 2);
        KtlsKeyUpdates u(TlsVersion::tls1_3, c, copy_of(rx), copy_of(tx));
        for (int gen = 1; gen <= 3; ++gen) {
            auto next = tls13_next_traffic_secret(c, rx.view());
            ASSERT_TRUE(next);
            rx = std::move(next).value();
            auto want = tls13_traffic_keys(c, rx.view());
            ASSERT_TRUE(want);
            auto got = u.on_client_handshake(kUpdateNotRequested, t0 + std::chrono::seconds(gen));
            ASSERT_EQ(got.refuse, nullptr) << got.detail;
            ASSERT_TRUE(got.next_rx.has_value());
            EXPECT_TRUE(got.next_rx->key.equals(want->key.view())) << "generation " << gen;
            EXPECT_TRUE(got.next_rx->iv.equals(want->iv.view())) << "generation " << gen;
            EXPECT_EQ(got.next_rx->seq, 0u);
            EXPECT_EQ(got.next_rx->version, TlsVersion::tls1_3);
            EXPECT_EQ(got.next_rx->cipher, c);
            EXPECT_FALSE(u.tx_update_owed());
        }
        EXPECT_EQ(u.rx_updates(), 3u);
        // TX has not moved: its first next key is one generation on from the original.
        auto tx1 = tls13_next_traffic_secret(c, tx.view());
        ASSERT_TRUE(tx1);
        auto want_tx = tls13_traffic_keys(c, tx1->view());
        auto got_tx = u.next_tx_keys();
        ASSERT_TRUE(got_tx) << got_tx.error().message();
        EXPECT_TRUE(got_tx->key.equals(want_tx->key.view()));
        EXPECT_TRUE(got_tx->iv.equals(want_tx->iv.view()));
        EXPECT_EQ(got_tx->seq, 0u);
        EXPECT_EQ(u.tx_updates(), 1u);
    }
}

// update_requested leaves one KeyUpdate owed, however many requests arrive before it goes out
// (RFC 8446 §4.6.3); next_tx_keys() pays it.
TEST(KtlsKeyUpdates, RequestedUpdatesOweOneOfOurs) {
    auto u = tls13();
    EXPECT_FALSE(u.tx_update_owed());
    ASSERT_EQ(u.on_client_handshake(kUpdateRequested, t0).refuse, nullptr);
    EXPECT_TRUE(u.tx_update_owed());
    ASSERT_EQ(u.on_client_handshake(kUpdateRequested, t0 + std::chrono::milliseconds(1)).refuse, nullptr);
    EXPECT_TRUE(u.tx_update_owed());
    ASSERT_TRUE(u.next_tx_keys());
    EXPECT_FALSE(u.tx_update_owed());
    EXPECT_EQ(u.tx_updates(), 1u);
    EXPECT_EQ(u.rx_updates(), 2u);
    EXPECT_EQ(KtlsKeyUpdates::kKeyUpdateNotRequested, kUpdateNotRequested);
}

// The userspace path's limit on the kernel path: 8 KeyUpdates in any second, the 9th closes the
// connection as key_update_flood; back-to-back updates are fine (no minimum record count).
TEST(KtlsKeyUpdates, RateLimitedLikeTheUserspacePath) {
    auto u = tls13();
    for (int i = 0; i < 8; ++i) {
        auto o = u.on_client_handshake(kUpdateNotRequested, t0 + std::chrono::milliseconds(10 * i));
        ASSERT_EQ(o.refuse, nullptr) << "update " << i << ": " << o.detail;
        ASSERT_TRUE(o.next_rx);
    }
    auto flood = u.on_client_handshake(kUpdateNotRequested, t0 + std::chrono::milliseconds(500));
    ASSERT_NE(flood.refuse, nullptr);
    EXPECT_STREQ(flood.refuse, "key_update_flood");
    EXPECT_FALSE(flood.next_rx);
    EXPECT_EQ(u.rx_updates(), 8u);
    // A second after the first, the window has room again.
    auto later = tls13();
    for (int i = 0; i < 8; ++i) ASSERT_EQ(later.on_client_handshake(kUpdateNotRequested, t0).refuse, nullptr);
    const auto second_later = t0 + std::chrono::milliseconds(1001);
    EXPECT_EQ(later.on_client_handshake(kUpdateNotRequested, second_later).refuse, nullptr);
}

TEST(KtlsKeyUpdates, RefusesWhatAClientMayNotSend) {
    struct Case {
        const char* what;
        TlsVersion version;
        Bytes record;
        RecordError error;
    };
    const Case cases[] = {
        {"TLS 1.2 renegotiation (ClientHello)", TlsVersion::tls1_2, {1, 0, 0, 1, 0},
         RecordError::unexpected_handshake_message},
        {"TLS 1.2 KeyUpdate bytes", TlsVersion::tls1_2, {24, 0, 0, 1, 0}, RecordError::unexpected_handshake_message},
        {"a client NewSessionTicket", TlsVersion::tls1_3, {4, 0, 0, 1, 0}, RecordError::unexpected_handshake_message},
        {"KeyUpdate with a body of 2", TlsVersion::tls1_3, {24, 0, 0, 2, 0, 0}, RecordError::key_update_bad_length},
        {"KeyUpdate with a body of 0", TlsVersion::tls1_3, {24, 0, 0, 0}, RecordError::key_update_bad_length},
        {"KeyUpdateRequest 2", TlsVersion::tls1_3, {24, 0, 0, 1, 2}, RecordError::key_update_bad_value},
        {"KeyUpdateRequest 255", TlsVersion::tls1_3, {24, 0, 0, 1, 255}, RecordError::key_update_bad_value},
        {"bytes behind the KeyUpdate", TlsVersion::tls1_3, {24, 0, 0, 1, 0, 24},
         RecordError::key_update_not_at_record_end},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        const bool tls13 = c.version == TlsVersion::tls1_3;  // TLS 1.2 sessions keep no secrets
        KtlsKeyUpdates u(c.version, Cipher::aes_128_gcm, tls13 ? secret_of(32, 1) : SecretBytes{},
                         tls13 ? secret_of(32, 2) : SecretBytes{});
        auto o = u.on_client_handshake(c.record, t0);
        ASSERT_TRUE(o.error) << o.detail;
        EXPECT_EQ(*o.error, c.error) << describe(*o.error).name;
        // The close reason is the table's: one meaning on every path.
        ASSERT_NE(o.refuse, nullptr);
        EXPECT_STREQ(o.refuse, describe(c.error).close_reason);
        EXPECT_FALSE(o.next_rx);
        EXPECT_FALSE(u.tx_update_owed());
        EXPECT_EQ(u.rx_updates(), 0u);
    }
}

// A KeyUpdate split across records is legal TLS: the first part is no refusal, the path must read
// on (mid_message). Application data or an alert before the rest is handshake_interleaved
// (RFC 8446 §5.1); the rest completes the KeyUpdate.
TEST(KtlsKeyUpdates, SplitKeyUpdateWaitsAndInterleavingIsRefused) {
    auto split = tls13();
    auto first = split.on_client_handshake(Bytes{24, 0, 0}, t0);
    EXPECT_EQ(first.refuse, nullptr) << first.detail;
    EXPECT_FALSE(first.next_rx);
    EXPECT_TRUE(split.mid_message());
    auto rest = split.on_client_handshake(Bytes{1, 1}, t0);
    EXPECT_EQ(rest.refuse, nullptr) << rest.detail;
    EXPECT_TRUE(rest.next_rx);
    EXPECT_TRUE(split.tx_update_owed());
    EXPECT_FALSE(split.on_other_record());

    auto interleaved = tls13();
    EXPECT_EQ(interleaved.on_client_handshake(Bytes{24, 0}, t0).refuse, nullptr);
    auto e = interleaved.on_other_record();
    ASSERT_TRUE(e);
    EXPECT_EQ(*e, RecordError::handshake_interleaved);
    EXPECT_EQ(describe(*e).alert, kAlertUnexpectedMessage);
}

// Without the traffic secret (not kept) a KeyUpdate cannot be followed: refused, never guessed.
TEST(KtlsKeyUpdates, NoSecretNoKeys) {
    KtlsKeyUpdates u(TlsVersion::tls1_3, Cipher::aes_128_gcm, SecretBytes{}, SecretBytes{});
    auto o = u.on_client_handshake(kUpdateRequested, t0);
    ASSERT_NE(o.refuse, nullptr);
    EXPECT_STREQ(o.refuse, "internal_error");
    auto tx = u.next_tx_keys();
    ASSERT_FALSE(tx);
    EXPECT_EQ(tx.error().code, ENOKEY);
}

}  // namespace
}  // namespace ztp::crypto
