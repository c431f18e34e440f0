// kTLS through crypto/ktls_sockopt on a loopback TCP pair with fixed keys and no handshake, for
// TLS 1.2/1.3 × AES-128-GCM/AES-256-GCM/CHACHA20-POLY1305, in the spirit of the kernel's
// tools/testing/selftests/net/tls.c. Every direction is also checked against OpenSSL
// (crypto::ktls_reference), so a wrongly filled crypto_info cannot hide behind a symmetric
// kernel-to-kernel loopback.
#include <fcntl.h>
#include <linux/tls.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <thread>

#include <gtest/gtest.h>

#include "crypto/ktls_probe.hpp"
#include "crypto/ktls_sockopt.hpp"
#include "tests/ktls/ktls_test_util.hpp"

namespace ztp::ktls_test {
namespace {

using crypto::Direction;
namespace ref = crypto::ktls_reference;

// Crosses a byte carry after two records: catches a rec_seq that is not a big-endian counter.
constexpr uint64_t kSeq = 0x01020304050607feULL;

class KtlsSockopt : public testing::TestWithParam<Param> {
protected:
    config::TlsVersion v() const { return GetParam().version; }
    config::Cipher c() const { return GetParam().cipher; }

    void install(int fd, Direction dir, const Keys& k, uint64_t seq) {
        auto r = crypto::ktls_install(fd, dir, v(), c(), k.key(), k.iv, seq);
        ASSERT_TRUE(r.ok()) << r.error().message();
    }
    void ulp(int fd) {
        auto r = crypto::ktls_enable_ulp(fd);
        ASSERT_TRUE(r.ok()) << r.error().message();
    }
};

// Reads exactly `n` bytes of application data from a kTLS RX socket.
std::vector<uint8_t> ktls_read(int fd, size_t n) {
    std::vector<uint8_t> out(n);
    size_t got = 0;
    while (got < n) {
        auto r = crypto::ktls_recv(fd, std::span<uint8_t>(out).subspan(got));
        if (!r) {
            ADD_FAILURE() << r.error().message() << " after " << got << " of " << n << " bytes";
            break;
        }
        if (r->bytes == 0) {
            ADD_FAILURE() << "EOF after " << got << " of " << n << " bytes";
            break;
        }
        EXPECT_EQ(r->record_type, crypto::kRecordApplicationData);
        got += r->bytes;
    }
    out.resize(got);
    return out;
}

TEST_P(KtlsSockopt, KernelToKernelSeveralSizes) {
    const auto s0 = tls_stat();
    auto p = tcp_pair();
    const Keys k = keys(c(), 1);
    ulp(p.a.get());
    ulp(p.b.get());
    install(p.a.get(), Direction::tx, k, kSeq);
    install(p.b.get(), Direction::rx, k, kSeq);
    const auto s1 = tls_stat();
    // The kernel counts software-crypto installs: this is where "offloaded" is proven.
    EXPECT_GE(s1.at("TlsTxSw") - s0.at("TlsTxSw"), 1);
    EXPECT_GE(s1.at("TlsRxSw") - s0.at("TlsRxSw"), 1);
    EXPECT_GE(s1.at("TlsCurrTxSw"), 1);
    EXPECT_GE(s1.at("TlsCurrRxSw"), 1);

    for (size_t size : {size_t{1}, size_t{1000}, size_t{16384}, size_t{100 * 1024}}) {
        SCOPED_TRACE("size " + std::to_string(size));
        const auto data = pattern(size, static_cast<uint8_t>(size));
        // A writer thread: 100 KiB of records can exceed what loopback buffers hold unread.
        bool sent = false;
        std::thread w([&] { sent = send_all(p.a.get(), data); });
        const auto got = ktls_read(p.b.get(), size);
        w.join();
        EXPECT_TRUE(sent);
        EXPECT_TRUE(got == data);
    }
    EXPECT_EQ(tls_stat().at("TlsDecryptError"), s1.at("TlsDecryptError"));
}

// Kernel TX → raw bytes on a plain socket → OpenSSL opens them: proves the record format, the
// nonce construction, the AAD and the per-record sequence advance (3 records across a carry).
TEST_P(KtlsSockopt, KernelTxOpensWithOpenSsl) {
    auto p = tcp_pair();
    const Keys k = keys(c(), 2);
    ulp(p.a.get());
    install(p.a.get(), Direction::tx, k, kSeq);
    for (uint64_t i = 0; i < 3; ++i) {
        const auto msg = pattern(100 + i, static_cast<uint8_t>(i));
        ASSERT_TRUE(send_all(p.a.get(), msg));
        const auto rec = read_raw_record(p.b.get());
        ASSERT_FALSE(rec.empty());
        // TLS 1.3 hides the type: the outer one is always application_data.
        EXPECT_EQ(rec[0], crypto::kRecordApplicationData);
        EXPECT_EQ(rec[1], 3);
        EXPECT_EQ(rec[2], 3);
        auto o = ref::open_record(v(), c(), k.key(), k.iv, kSeq + i, rec);
        ASSERT_TRUE(o.ok()) << "record " << i << ": " << o.error().message();
        EXPECT_EQ(o->type, crypto::kRecordApplicationData);
        EXPECT_TRUE(o->plaintext == msg);
    }
}

// OpenSSL seals → plain socket → kernel RX decrypts (3 records across the carry), then a
// non-application-data record arrives alone with its type in the cmsg.
TEST_P(KtlsSockopt, OpenSslRecordsDecryptInKernel) {
    auto p = tcp_pair();
    const Keys k = keys(c(), 3);
    ulp(p.b.get());
    install(p.b.get(), Direction::rx, k, kSeq);
    for (uint64_t i = 0; i < 3; ++i) {
        const auto msg = pattern(200 + i, static_cast<uint8_t>(i));
        auto rec = ref::seal_record(v(), c(), k.key(), k.iv, kSeq + i, crypto::kRecordApplicationData, msg);
        ASSERT_TRUE(rec.ok()) << rec.error().message();
        ASSERT_TRUE(send_all(p.a.get(), *rec));
        EXPECT_TRUE(ktls_read(p.b.get(), msg.size()) == msg) << "record " << i;
    }
    const std::vector<uint8_t> alert{1, 0};  // warning, close_notify
    auto rec = ref::seal_record(v(), c(), k.key(), k.iv, kSeq + 3, crypto::kRecordAlert, alert);
    ASSERT_TRUE(rec.ok());
    ASSERT_TRUE(send_all(p.a.get(), *rec));
    std::array<uint8_t, 64> buf{};
    auto r = crypto::ktls_recv(p.b.get(), buf);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->record_type, crypto::kRecordAlert);
    ASSERT_EQ(r->bytes, alert.size());
    EXPECT_EQ(buf[0], 1);
    EXPECT_EQ(buf[1], 0);
}

// A plain read without a cmsg buffer must not swallow a control record: EIO, and the record
// stays queued for recvmsg. splice() likewise refuses it with EINVAL (the relay's exit signal).
TEST_P(KtlsSockopt, ControlRecordNeedsCmsg) {
    auto p = tcp_pair();
    const Keys k = keys(c(), 4);
    ulp(p.b.get());
    install(p.b.get(), Direction::rx, k, 0);
    const std::vector<uint8_t> alert{1, 0};
    auto rec = ref::seal_record(v(), c(), k.key(), k.iv, 0, crypto::kRecordAlert, alert);
    ASSERT_TRUE(rec.ok());
    ASSERT_TRUE(send_all(p.a.get(), *rec));

    std::array<uint8_t, 64> buf{};
    EXPECT_EQ(::recv(p.b.get(), buf.data(), buf.size(), 0), -1);
    EXPECT_EQ(errno, EIO);
    int pipefd[2];
    ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
    UniqueFd pr(pipefd[0]), pw(pipefd[1]);
    EXPECT_EQ(::splice(p.b.get(), nullptr, pw.get(), nullptr, 4096, 0), -1);
    EXPECT_EQ(errno, EINVAL);
    auto r = crypto::ktls_recv(p.b.get(), buf);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->record_type, crypto::kRecordAlert);
    EXPECT_EQ(r->bytes, alert.size());
}

// One flipped ciphertext byte: the kernel must refuse the record with EBADMSG, count it, and
// leave no decrypted bytes in our buffer. Built like the kernel selftests: a kTLS TX socket writes
// into a plain peer, we modify the record, and write it into a fresh kTLS RX socket.
TEST_P(KtlsSockopt, FlippedCiphertextByteIsEbadmsg) {
    const Keys k = keys(c(), 5);
    auto src = tcp_pair();
    ulp(src.a.get());
    install(src.a.get(), Direction::tx, k, kSeq);
    const auto msg = pattern(1000);
    ASSERT_TRUE(send_all(src.a.get(), msg));
    auto rec = read_raw_record(src.b.get());
    ASSERT_GT(rec.size(), 5 + 8 + 16 + 10u);
    rec[rec.size() - 16 - 10] ^= 0x01;  // inside the ciphertext, before the tag
    EXPECT_EQ(err_code(ref::open_record(v(), c(), k.key(), k.iv, kSeq, rec)), EBADMSG);

    const auto s0 = tls_stat();
    auto dst = tcp_pair();
    ulp(dst.b.get());
    install(dst.b.get(), Direction::rx, k, kSeq);
    ASSERT_TRUE(send_all(dst.a.get(), rec));
    std::vector<uint8_t> buf(4096, 0xaa);
    auto r = crypto::ktls_recv(dst.b.get(), buf);
    ASSERT_FALSE(r.ok()) << "kernel accepted a modified record (" << r->bytes << " bytes)";
    EXPECT_EQ(r.error().code, EBADMSG) << r.error().message();
    EXPECT_GE(tls_stat().at("TlsDecryptError") - s0.at("TlsDecryptError"), 1);
    for (size_t i = 0; i < buf.size(); ++i)
        ASSERT_TRUE(buf[i] == 0 || buf[i] == 0xaa) << "byte " << i << " of a rejected record survived";
}

INSTANTIATE_TEST_SUITE_P(All, KtlsSockopt, testing::ValuesIn(all_params()), param_name);

// --- the socket-option contract itself (version/cipher independent) -------------------------

TEST(KtlsContract, UlpNeedsAnEstablishedSocket) {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(s);
    auto r = crypto::ktls_enable_ulp(s.get());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ENOTCONN) << r.error().message();
}

TEST(KtlsContract, UlpOnlyOnce) {
    auto p = tcp_pair();
    ASSERT_TRUE(crypto::ktls_enable_ulp(p.a.get()).ok());
    auto r = crypto::ktls_enable_ulp(p.a.get());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, EEXIST) << r.error().message();
}

TEST(KtlsContract, KeyNeedsTheUlp) {
    auto p = tcp_pair();
    const Keys k = keys(config::Cipher::aes_128_gcm, 6);
    auto r = crypto::ktls_install(p.a.get(), Direction::tx, config::TlsVersion::tls1_3,
                                  config::Cipher::aes_128_gcm, k.key(), k.iv, 0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ENOPROTOOPT) << r.error().message();
}

TEST(KtlsContract, EachDirectionOnce) {
    auto p = tcp_pair();
    const Keys k = keys(config::Cipher::aes_256_gcm, 7);
    ASSERT_TRUE(crypto::ktls_enable_ulp(p.a.get()).ok());
    for (Direction d : {Direction::tx, Direction::rx}) {
        auto first = crypto::ktls_install(p.a.get(), d, config::TlsVersion::tls1_2,
                                          config::Cipher::aes_256_gcm, k.key(), k.iv, 0);
        ASSERT_TRUE(first.ok()) << first.error().message();
        auto again = crypto::ktls_install(p.a.get(), d, config::TlsVersion::tls1_2,
                                          config::Cipher::aes_256_gcm, k.key(), k.iv, 0);
        ASSERT_FALSE(again.ok());
        EXPECT_EQ(again.error().code, EBUSY) << again.error().message();
    }
}

TEST(KtlsContract, SizesAreCheckedBeforeTheKernel) {
    auto p = tcp_pair();
    ASSERT_TRUE(crypto::ktls_enable_ulp(p.a.get()).ok());
    const Keys k = keys(config::Cipher::aes_256_gcm, 8);
    auto short_key = crypto::ktls_install(p.a.get(), Direction::tx, config::TlsVersion::tls1_3,
                                          config::Cipher::aes_256_gcm, k.key().first(16), k.iv, 0);
    EXPECT_EQ(err_code(short_key), EMSGSIZE);
    // A 4-byte salt is only meaningful for TLS 1.2 AES-GCM.
    auto salt_only = crypto::ktls_install(p.a.get(), Direction::tx, config::TlsVersion::tls1_3,
                                          config::Cipher::aes_256_gcm, k.key(), std::span(k.iv).first(4), 0);
    EXPECT_EQ(err_code(salt_only), EMSGSIZE);
    // Nothing reached the kernel, so the direction is still free.
    EXPECT_TRUE(crypto::ktls_install(p.a.get(), Direction::tx, config::TlsVersion::tls1_3,
                                     config::Cipher::aes_256_gcm, k.key(), k.iv, 0)
                    .ok());
}

// TLS 1.2 AES-GCM with only the salt: the explicit nonce on the wire is the sequence number and
// advances with it, and OpenSSL opens the records with iv = salt || seq.
TEST(KtlsContract, Tls12GcmSaltOnlyUsesSequenceAsExplicitNonce) {
    auto p = tcp_pair();
    const Keys k = keys(config::Cipher::aes_128_gcm, 9);
    ASSERT_TRUE(crypto::ktls_enable_ulp(p.a.get()).ok());
    auto r = crypto::ktls_install(p.a.get(), Direction::tx, config::TlsVersion::tls1_2,
                                  config::Cipher::aes_128_gcm, k.key(), std::span(k.iv).first(4), kSeq);
    ASSERT_TRUE(r.ok()) << r.error().message();
    for (uint64_t i = 0; i < 3; ++i) {
        const auto msg = pattern(50);
        ASSERT_TRUE(send_all(p.a.get(), msg));
        const auto rec = read_raw_record(p.b.get());
        ASSERT_GE(rec.size(), 13u);
        std::array<uint8_t, 12> iv{};
        std::copy_n(k.iv.begin(), 4, iv.begin());
        for (int b = 0; b < 8; ++b) iv[4 + b] = static_cast<uint8_t>((kSeq + i) >> (56 - 8 * b));
        EXPECT_TRUE(std::equal(iv.begin() + 4, iv.end(), rec.begin() + 5))
            << "explicit nonce of record " << i;
        auto o = ref::open_record(config::TlsVersion::tls1_2, config::Cipher::aes_128_gcm, k.key(), iv,
                                  kSeq + i, rec);
        ASSERT_TRUE(o.ok()) << o.error().message();
        EXPECT_TRUE(o->plaintext == msg);
    }
}

}  // namespace
}  // namespace ztp::ktls_test
