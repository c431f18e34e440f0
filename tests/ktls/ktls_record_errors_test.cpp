// The kernel record path against a hostile client, in a kernel with kTLS (Linux 6.1 here): what the
// kernel allows after a refused record, and that KernelRecordPath answers every protocol violation
// with the alert of crypto/record_errors.hpp through kTLS TX. A loopback pair: `peer` is a plain
// TCP socket that seals records with the user-space reference (crypto::ktls_reference), `server` has
// the "tls" ULP with fixed keys for both directions, as after a handshake.
//
// Kernel contracts proven here (README "Alerts on the kernel path"):
//   * After EBADMSG on RX, sk_err stays EBADMSG and every send fails with it until SO_ERROR is read;
//     then kTLS TX seals and sends the alert. After EMSGSIZE the recvmsg has already consumed sk_err.
//   * The refused record stays in the TCP receive queue (kTLS never hands it out): close() then
//     sends a RST after our FIN even with shutdown(SHUT_WR) first. The peer has the alert and the FIN
//     before it. Errors found in a consumed control record leave nothing unread: a plain FIN.
//   * A protected change_cipher_spec arrives as control record type 20; an unprotected one in
//     TLS 1.3 is refused by the kernel at its header (EBADMSG, too short for the AEAD).
//   * splice() returns 0 for empty and padding-only application_data records; POLLRDHUP tells them
//     from the FIN.
#include <fcntl.h>
#include <linux/tls.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "crypto/kernel_record_path.hpp"
#include "crypto/ktls_probe.hpp"
#include "crypto/ktls_sockopt.hpp"
#include "crypto/record_errors.hpp"
#include "tests/ktls/ktls_test_util.hpp"

namespace ztp::ktls_test {
namespace {

using crypto::Direction;
using crypto::IoStatus;
using crypto::KernelRecordPath;
using crypto::RecordError;
namespace ref = crypto::ktls_reference;
using Bytes = std::vector<uint8_t>;

class KtlsRecordErrors : public testing::TestWithParam<Param> {
protected:
    void SetUp() override {
        pair_ = tcp_pair();
        ASSERT_TRUE(crypto::ktls_enable_ulp(server()).ok());
        ASSERT_TRUE(crypto::ktls_install(server(), Direction::rx, v(), c(), up_.key(), up_.iv, 0).ok());
        ASSERT_TRUE(crypto::ktls_install(server(), Direction::tx, v(), c(), down_.key(), down_.iv, 0).ok());
        // TLS 1.2 sessions keep no secrets; the TLS 1.3 cases here are refused before any rekey.
        path_ = std::make_unique<KernelRecordPath>(
            server(), crypto::KtlsKeyUpdates(v(), c(), crypto::SecretBytes{}, crypto::SecretBytes{}));
    }

    config::TlsVersion v() const { return GetParam().version; }
    config::Cipher c() const { return GetParam().cipher; }
    bool tls13() const { return v() == config::TlsVersion::tls1_3; }
    int server() const { return pair_.b.get(); }
    int peer() const { return pair_.a.get(); }

    // The client's next record, sealed by the reference under the client's key.
    Bytes seal(uint8_t type, const Bytes& plaintext) {
        auto rec = ref::seal_record(v(), c(), up_.key(), up_.iv, up_seq_++, type, plaintext);
        EXPECT_TRUE(rec.ok());
        return rec ? *rec : Bytes{};
    }
    void send(const Bytes& wire) { ASSERT_TRUE(send_all(peer(), wire)); }

    // What the peer receives from the server next: one record, opened under the server's key.
    ref::Opened next_from_server() {
        const Bytes rec = read_raw_record(peer());
        auto o = ref::open_record(v(), c(), down_.key(), down_.iv, down_seq_++, rec);
        EXPECT_TRUE(o.ok()) << (o ? "" : o.error().message());
        return o ? *o : ref::Opened{};
    }
    // The peer got the fatal `alert` from the server, then its FIN (end of stream).
    void expect_alert_then_fin(uint8_t alert) {
        const auto o = next_from_server();
        EXPECT_EQ(o.type, crypto::kRecordAlert);
        EXPECT_EQ(o.plaintext, (Bytes{crypto::kAlertFatal, alert}));
        uint8_t b = 0;
        EXPECT_EQ(::recv(peer(), &b, 1, 0), 0) << "expected the server's FIN after the alert";
    }
    // Reads until the path refuses; checks the refusal names `want` and its row's close reason.
    void expect_refused(RecordError want) {
        std::array<std::byte, 20000> buf{};
        auto r = path_->read(buf);
        ASSERT_TRUE(r.record_error) << "status " << static_cast<int>(r.status) << ": " << r.reason;
        EXPECT_EQ(*r.record_error, want) << crypto::describe(*r.record_error).name << ": " << r.reason;
        EXPECT_STREQ(r.close_reason, crypto::describe(want).close_reason);
    }

    TcpPair pair_;
    Keys up_ = keys(GetParam().cipher, 1);    // client → server
    Keys down_ = keys(GetParam().cipher, 2);  // server → client
    uint64_t up_seq_ = 0;
    uint64_t down_seq_ = 0;
    std::unique_ptr<KernelRecordPath> path_;
};

int peer_tcp_state(int fd) {
    tcp_info ti{};
    socklen_t l = sizeof ti;
    EXPECT_EQ(::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l), 0);
    return ti.tcpi_state;
}

ssize_t send_alert_raw(int fd, uint8_t description) {
    const uint8_t alert[2] = {crypto::kAlertFatal, description};
    return crypto::ktls_send_record(fd, crypto::kRecordAlert, alert);
}

// A tampered record: EBADMSG, and the pending socket error blocks TX until SO_ERROR is read. The
// path reads it, and the bad_record_mac alert goes out under the TX key, followed by our FIN.
TEST_P(KtlsRecordErrors, BadRecordMacAlertAfterEbadmsg) {
    Bytes rec = seal(crypto::kRecordApplicationData, pattern(300));
    rec[rec.size() - 20] ^= 0x01;
    send(rec);
    std::array<uint8_t, 512> buf{};
    auto raw = crypto::ktls_recv(server(), buf);
    ASSERT_FALSE(raw.ok());
    ASSERT_EQ(raw.error().code, EBADMSG);
    // The kernel contract fail_with_alert works around: the error stays pending for TX.
    EXPECT_EQ(send_alert_raw(server(), crypto::kAlertBadRecordMac), -1);
    EXPECT_EQ(errno, EBADMSG);

    auto out = path_->fail_with_alert(*crypto::record_error_from_errno(EBADMSG));
    EXPECT_TRUE(out.alert_sent) << std::strerror(out.send_errno);
    EXPECT_TRUE(out.fin_sent);
    EXPECT_GT(out.unread, 0u) << "the refused record stays queued";
    expect_alert_then_fin(crypto::kAlertBadRecordMac);
    // Unread bytes at close(): Linux answers with a RST after the FIN (tcp_close). The peer has
    // already read the alert and the end of stream above.
    pair_.b.reset();
    EXPECT_EQ(peer_tcp_state(peer()), TCP_CLOSE) << "RST expected: unread bytes at close";
}

// The same through read(): the path refuses, sends the alert itself and names the row.
TEST_P(KtlsRecordErrors, ReadAnswersATamperedRecord) {
    Bytes rec = seal(crypto::kRecordApplicationData, pattern(50));
    rec[7] ^= 0x80;
    send(rec);
    std::array<std::byte, 512> buf{};
    auto r = path_->read(buf);
    EXPECT_EQ(r.status, IoStatus::bad_record);
    ASSERT_TRUE(r.record_error);
    EXPECT_EQ(*r.record_error, RecordError::bad_record_mac);
    EXPECT_STREQ(r.close_reason, "bad_record");
    expect_alert_then_fin(crypto::kAlertBadRecordMac);
}

// A length over the limit: EMSGSIZE (the recvmsg consumed sk_err), record_overflow goes out.
TEST_P(KtlsRecordErrors, RecordOverflowAlertAfterEmsgsize) {
    const size_t len = 16384 + 256 + 1;
    Bytes big(5 + len, 0x41);
    big[0] = crypto::kRecordApplicationData;
    big[1] = big[2] = 3;
    big[3] = static_cast<uint8_t>(len >> 8);
    big[4] = static_cast<uint8_t>(len);
    send(big);
    expect_refused(RecordError::plaintext_overflow);
    EXPECT_EQ(crypto::describe(RecordError::plaintext_overflow).alert, crypto::kAlertRecordOverflow);
    expect_alert_then_fin(crypto::kAlertRecordOverflow);
}

// Errors found in a control record the path consumed leave nothing unread: a plain FIN, no RST.
TEST_P(KtlsRecordErrors, MalformedAlertIsDecodeErrorAndAnOrderlyClose) {
    send(seal(crypto::kRecordAlert, Bytes{crypto::kAlertFatal}));  // one byte: not an alert
    expect_refused(RecordError::malformed_alert);
    expect_alert_then_fin(crypto::kAlertDecodeError);
    pair_.b.reset();
    EXPECT_EQ(peer_tcp_state(peer()), TCP_CLOSE_WAIT) << "no RST: nothing was left unread";
}

TEST_P(KtlsRecordErrors, ProtectedChangeCipherSpecIsUnexpectedMessage) {
    // TLS 1.2 protects a post-handshake CCS under the current key, TLS 1.3 as an inner type: the
    // kernel hands it over as control record 20.
    send(seal(crypto::kRecordChangeCipherSpec, Bytes{1}));
    expect_refused(RecordError::ccs_after_handshake);
    expect_alert_then_fin(crypto::kAlertUnexpectedMessage);
}

// Heartbeat (24): TLS 1.3 as the inner type, TLS 1.2 as the outer one (in the AAD): the kernel
// decrypts it and hands it over as control record 24.
TEST_P(KtlsRecordErrors, UnknownRecordTypeIsUnexpectedMessage) {
    send(seal(24, Bytes{1, 0, 0}));
    expect_refused(RecordError::unknown_record_type);
    expect_alert_then_fin(crypto::kAlertUnexpectedMessage);
}

// A client never sends a NewSessionTicket (nor anything but KeyUpdate): the same parser as on the
// userspace path refuses it, where the kernel path used to skip any record starting with 4.
TEST_P(KtlsRecordErrors, ClientHandshakeRecordsGoThroughTheParser) {
    send(seal(crypto::kRecordHandshake, Bytes{4, 0, 0, 1, 0}));
    expect_refused(RecordError::unexpected_handshake_message);
    expect_alert_then_fin(crypto::kAlertUnexpectedMessage);
}

// splice() returns 0 for an empty and a padding-only application_data record: no FIN, so
// classify_zero_read() says empty_record and splicing goes on; a real FIN is eof. Records queued
// before the FIN are still spliced after an empty one.
TEST_P(KtlsRecordErrors, EmptyRecordsAreNotTheEndOfTheStream) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    UniqueFd pr(fds[0]), pw(fds[1]);
    auto splice_once = [&] { return ::splice(server(), nullptr, pw.get(), nullptr, 65536, SPLICE_F_NONBLOCK); };
    Bytes wire = seal(crypto::kRecordApplicationData, {});
    // TLS 1.3 padding-only: the reference appends its type byte, so "23, zeros" sealed as type 0.
    if (tls13()) {
        const Bytes padded = seal(0, Bytes{crypto::kRecordApplicationData, 0, 0, 0, 0, 0});
        wire.insert(wire.end(), padded.begin(), padded.end());
    }
    const Bytes data = pattern(10);
    const Bytes rec = seal(crypto::kRecordApplicationData, data);
    wire.insert(wire.end(), rec.begin(), rec.end());
    send(wire);
    const int empties = tls13() ? 2 : 1;
    for (int i = 0; i < empties; ++i) {
        ASSERT_EQ(splice_once(), 0) << "empty record " << i;
        EXPECT_EQ(path_->classify_zero_read(), KernelRecordPath::ZeroRead::empty_record);
    }
    ASSERT_EQ(splice_once(), static_cast<ssize_t>(data.size()));

    // An empty record, data and the FIN arrive together: the 0 of the empty record is still a record.
    Bytes tail = seal(crypto::kRecordApplicationData, {});
    const Bytes more = seal(crypto::kRecordApplicationData, data);
    tail.insert(tail.end(), more.begin(), more.end());
    send(tail);
    ASSERT_EQ(::shutdown(peer(), SHUT_WR), 0);
    ASSERT_EQ(splice_once(), 0);
    EXPECT_EQ(path_->classify_zero_read(), KernelRecordPath::ZeroRead::empty_record);
    ASSERT_EQ(splice_once(), static_cast<ssize_t>(data.size()));
    ASSERT_EQ(splice_once(), 0);
    EXPECT_EQ(path_->classify_zero_read(), KernelRecordPath::ZeroRead::eof);
}

// read() (recvmsg) skips empty records by itself and reports the FIN as the end.
TEST_P(KtlsRecordErrors, ReadSkipsEmptyRecords) {
    Bytes wire = seal(crypto::kRecordApplicationData, {});
    const Bytes data = pattern(5);
    const Bytes rec = seal(crypto::kRecordApplicationData, data);
    wire.insert(wire.end(), rec.begin(), rec.end());
    const Bytes last = seal(crypto::kRecordApplicationData, {});
    wire.insert(wire.end(), last.begin(), last.end());
    send(wire);
    ASSERT_EQ(::shutdown(peer(), SHUT_WR), 0);
    std::array<std::byte, 100> buf{};
    auto r = path_->read(buf);
    ASSERT_EQ(r.status, IoStatus::ok) << r.reason;
    EXPECT_EQ(r.bytes, data.size());
    for (;;) {
        r = path_->read(buf);
        if (r.status != IoStatus::want_read) break;
    }
    EXPECT_EQ(r.status, IoStatus::eof_unclean);
}

// The unprotected change_cipher_spec of TLS 1.3 middlebox compatibility, after the handshake: kTLS
// refuses it at its header (1 byte is shorter than the AEAD overhead) before user space could see its
// type, and no error stays pending (a header refusal): indistinguishable from a forged record, so the
// answer is bad_record_mac. TLS 1.2 AES-GCM: kTLS waits for the 13 bytes of header and explicit nonce
// before it judges a record, so the 6 bytes alone get no answer yet.
TEST_P(KtlsRecordErrors, UnprotectedChangeCipherSpecIsJudgedByTheKernel) {
    send(Bytes{crypto::kRecordChangeCipherSpec, 3, 3, 0, 1, 1});
    std::array<uint8_t, 64> buf{};
    if (!tls13() && c() != config::Cipher::chacha20_poly1305) {
        // Until the 6 bytes are queued (SIOCINQ), an EAGAIN would prove nothing.
        int queued = 0;
        for (int i = 0; i < 200000 && queued < 6; ++i) {
            ASSERT_EQ(::ioctl(server(), SIOCINQ, &queued), 0);
            if (queued < 6) ::sched_yield();
        }
        ASSERT_EQ(queued, 6);
        auto raw = crypto::ktls_recv(server(), buf, MSG_DONTWAIT);
        ASSERT_FALSE(raw.ok());
        EXPECT_EQ(raw.error().code, EAGAIN);
        return;
    }
    auto raw = crypto::ktls_recv(server(), buf);
    ASSERT_FALSE(raw.ok());
    EXPECT_EQ(raw.error().code, EBADMSG);
    int pending = -1;
    socklen_t len = sizeof pending;
    ASSERT_EQ(::getsockopt(server(), SOL_SOCKET, SO_ERROR, &pending, &len), 0);
    EXPECT_EQ(pending, 0) << "a header refusal leaves no error pending";
    auto out = path_->fail_with_alert(*crypto::record_error_from_errno(EBADMSG));
    EXPECT_TRUE(out.alert_sent);
    expect_alert_then_fin(crypto::kAlertBadRecordMac);
}

INSTANTIATE_TEST_SUITE_P(All, KtlsRecordErrors, testing::ValuesIn(all_params()), param_name);

// --- TLS 1.3 post-handshake messages on the kernel path ---------------------------------------

class KtlsPostHandshake : public KtlsRecordErrors {};

TEST_P(KtlsPostHandshake, KeyUpdateWithAnUnknownValueIsIllegalParameter) {
    send(seal(crypto::kRecordHandshake, Bytes{24, 0, 0, 1, 7}));
    expect_refused(RecordError::key_update_bad_value);
    expect_alert_then_fin(crypto::kAlertIllegalParameter);
}

TEST_P(KtlsPostHandshake, KeyUpdateOfTheWrongLengthIsDecodeError) {
    send(seal(crypto::kRecordHandshake, Bytes{24, 0, 0, 2, 0, 0}));
    expect_refused(RecordError::key_update_bad_length);
    expect_alert_then_fin(crypto::kAlertDecodeError);
}

// A KeyUpdate fragmented across records with application data in between (RFC 8446 §5.1).
TEST_P(KtlsPostHandshake, FragmentedKeyUpdateWithDataInBetweenIsUnexpectedMessage) {
    Bytes wire = seal(crypto::kRecordHandshake, Bytes{24, 0});
    const Bytes data = seal(crypto::kRecordApplicationData, pattern(20));
    wire.insert(wire.end(), data.begin(), data.end());
    send(wire);
    expect_refused(RecordError::handshake_interleaved);
    expect_alert_then_fin(crypto::kAlertUnexpectedMessage);
}

// A TLS 1.3 record whose plaintext is all zeros (no content type) fails inside the kernel like a
// forged one (EBADMSG after decryption): on the kernel path it gets bad_record_mac (README: a row
// where the kernel path differs from the table's unexpected_message).
TEST_P(KtlsPostHandshake, ZeroInnerTypeFailsInTheKernelLikeABadTag) {
    send(seal(0, Bytes(12, 0)));
    expect_refused(RecordError::bad_record_mac);
    expect_alert_then_fin(crypto::kAlertBadRecordMac);
}

std::vector<Param> tls13_params() {
    std::vector<Param> v;
    for (const auto& p : all_params())
        if (p.version == config::TlsVersion::tls1_3) v.push_back(p);
    return v;
}
INSTANTIATE_TEST_SUITE_P(Tls13, KtlsPostHandshake, testing::ValuesIn(tls13_params()), param_name);

// --- max_fragment_length (RFC 6066) -------------------------------------------------------------

// Whether this kernel bounds kTLS TX records (TLS_TX_MAX_PAYLOAD_LEN; Linux 6.1 answers ENOPROTOOPT,
// the rekey suite's newer kernel takes it). Asked of the kernel, as move_to_kernel() does.
Result<void> probe_tx_record_limit() {
    auto p = tcp_pair();
    if (auto u = crypto::ktls_enable_ulp(p.a.get()); !u) return u.error();
    return crypto::ktls_limit_tx_record(p.a.get(), 512);
}

// TLS 1.3 AES-128-GCM session keys with a negotiated max_fragment_length of 512, sequence 0.
bool max_fragment_keys(crypto::SessionKeys& sk, const Keys& k) {
    for (crypto::DirectionKeys* d : {&sk.rx, &sk.tx}) {
        d->version = config::TlsVersion::tls1_3;
        d->cipher = config::Cipher::aes_128_gcm;
        if (!d->key.assign(k.key()) || !d->iv.assign(k.iv)) return false;
    }
    sk.max_plaintext = 512;
    return true;
}

// A kernel that cannot bound kTLS TX records (Linux 6.1): a session whose client negotiated
// max_fragment_length stays out of the kernel, counted as max_fragment_length, with the socket
// untouched (no key installed) so the userspace path can take it.
TEST(KtlsMaxFragmentLength, SessionFallsBackWhereTheKernelCannotBoundRecords) {
    auto limit = probe_tx_record_limit();
    if (limit.ok()) GTEST_SKIP() << "this kernel bounds kTLS TX records: SessionStaysInTheKernelWhereItBoundsRecords";
    EXPECT_EQ(limit.error().code, ENOPROTOOPT);

    const Keys k = keys(config::Cipher::aes_128_gcm, 3);
    crypto::SessionKeys sk;
    ASSERT_TRUE(max_fragment_keys(sk, k));
    auto q = tcp_pair();
    auto moved = crypto::move_to_kernel(q.b.get(), sk);
    EXPECT_FALSE(moved.path);
    EXPECT_FALSE(moved.fatal);
    EXPECT_EQ(moved.reason, crypto::KtlsFallback::max_fragment_length) << moved.detail;
    EXPECT_STREQ(crypto::to_string(moved.reason), "max_fragment_length");
    // No TLS_RX went in: plain reads still see the raw bytes.
    ASSERT_TRUE(send_all(q.a.get(), Bytes{1, 2, 3}));
    std::array<uint8_t, 3> got{};
    EXPECT_EQ(::recv(q.b.get(), got.data(), got.size(), MSG_WAITALL), 3);
    EXPECT_EQ(got, (std::array<uint8_t, 3>{1, 2, 3}));
}

// A kernel that bounds kTLS TX records (TLS_TX_MAX_PAYLOAD_LEN, which newer kernels such as the
// rekey suite's have): the session stays in the kernel, and no record it seals carries more than
// the negotiated 512 bytes of plaintext (RFC 6066 §4).
TEST(KtlsMaxFragmentLength, SessionStaysInTheKernelWhereItBoundsRecords) {
    if (auto limit = probe_tx_record_limit(); !limit)
        GTEST_SKIP() << "this kernel cannot bound kTLS TX records (" << limit.error().message()
                     << "): SessionFallsBackWhereTheKernelCannotBoundRecords";
    const Keys k = keys(config::Cipher::aes_128_gcm, 4);
    crypto::SessionKeys sk;
    ASSERT_TRUE(max_fragment_keys(sk, k));
    auto q = tcp_pair();
    auto moved = crypto::move_to_kernel(q.b.get(), sk);
    ASSERT_TRUE(moved.path) << crypto::to_string(moved.reason) << ": " << moved.detail;
    const auto msg = pattern(2000);
    ASSERT_TRUE(send_all(q.b.get(), msg));
    std::vector<uint8_t> got;
    for (uint64_t seq = 0; got.size() < msg.size(); ++seq) {
        const auto rec = read_raw_record(q.a.get());
        ASSERT_FALSE(rec.empty());
        auto o = ref::open_record(config::TlsVersion::tls1_3, config::Cipher::aes_128_gcm, k.key(), k.iv, seq, rec);
        ASSERT_TRUE(o.ok()) << "record " << seq << ": " << o.error().message();
        EXPECT_EQ(o->type, crypto::kRecordApplicationData);
        ASSERT_LE(o->plaintext.size(), 512u) << "record " << seq;
        got.insert(got.end(), o->plaintext.begin(), o->plaintext.end());
    }
    EXPECT_TRUE(got == msg);
}

}  // namespace
}  // namespace ztp::ktls_test
