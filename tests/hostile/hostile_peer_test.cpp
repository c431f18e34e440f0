// The hostile peer checked against the reference: OpenSSL as the server on a loopback socket. What
// OpenSSL accepts from it proves the peer's records are right (1-byte records, KeyUpdates both ways,
// a KeyUpdate split over two records); what OpenSSL answers to its hostile records proves the peer
// reads alerts and closes correctly. The proxy tests (test_*.py here) trust both.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "crypto/ktls_sockopt.hpp"
#include "tests/hostile/hostile_peer.hpp"
#include "tests/unit/tls_test_support.hpp"

namespace ztp::hostile {
namespace {

// One TLS connection served by OpenSSL on a thread: echoes every byte until the peer ends.
class OpenSslEchoServer {
public:
    explicit OpenSslEchoServer(config::TlsVersion v) {
        ctx_ = SSL_CTX_new(TLS_server_method());
        const int proto = v == config::TlsVersion::tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
        SSL_CTX_set_min_proto_version(ctx_, proto);
        SSL_CTX_set_max_proto_version(ctx_, proto);
        SSL_CTX_use_certificate(ctx_, crypto::testing::test_cert().cert.get());
        SSL_CTX_use_PrivateKey(ctx_, crypto::testing::test_cert().key.get());
        lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof sa;
        EXPECT_EQ(::bind(lfd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
        EXPECT_EQ(::listen(lfd_, 1), 0);
        EXPECT_EQ(::getsockname(lfd_, reinterpret_cast<sockaddr*>(&sa), &len), 0);
        port_ = ntohs(sa.sin_port);
        thread_ = std::thread([this] { serve(); });
    }
    ~OpenSslEchoServer() {
        thread_.join();
        ::close(lfd_);
        SSL_CTX_free(ctx_);
    }
    uint16_t port() const { return port_; }
    uint64_t echoed() const { return echoed_; }

private:
    void serve() {
        const int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        SSL* ssl = SSL_new(ctx_);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            char buf[16384];
            int n;
            while ((n = SSL_read(ssl, buf, sizeof buf)) > 0) {
                if (SSL_write(ssl, buf, n) != n) break;
                echoed_ += static_cast<uint64_t>(n);
            }
            if (SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN) SSL_shutdown(ssl);
        }
        ERR_clear_error();
        SSL_free(ssl);
        // A lingering close: FIN after whatever OpenSSL sent (its alert), then read the peer's
        // unread bytes (an oversized record's body) until it closes. A plain close() with unread
        // data would send a reset, which can destroy the alert before the peer reads it.
        ::shutdown(fd, SHUT_WR);
        timeval tv{5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char sink[16384];
        while (::recv(fd, sink, sizeof sink, 0) > 0) {
        }
        ::close(fd);
    }
    SSL_CTX* ctx_ = nullptr;
    int lfd_ = -1;
    uint16_t port_ = 0;
    uint64_t echoed_ = 0;
    std::thread thread_;
};

class HostilePeerVsOpenSsl : public ::testing::TestWithParam<config::TlsVersion> {
protected:
    std::unique_ptr<HostilePeer> connect(const OpenSslEchoServer& s) {
        PeerOptions o;
        o.port = s.port();
        o.version = GetParam();
        o.timeout = std::chrono::milliseconds(10000);
        auto p = HostilePeer::connect(o);
        EXPECT_TRUE(p) << (p ? "" : p.error().message());
        return p ? std::move(*p) : nullptr;
    }
    static std::span<const uint8_t> bytes(const std::string& s) {
        return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
    }
    bool tls13() const { return GetParam() == config::TlsVersion::tls1_3; }
};

TEST_P(HostilePeerVsOpenSsl, RecordsOfAnySizeAndKeyUpdatesAreAcceptedAndFollowed) {
    OpenSslEchoServer server(GetParam());
    auto peer = connect(server);
    ASSERT_TRUE(peer);
    const std::string tiny = "one byte per record";
    ASSERT_TRUE(peer->send_app(bytes(tiny), 1));
    auto r = peer->read_app(tiny.size());
    EXPECT_EQ(std::string(r.data.begin(), r.data.end()), tiny);
    const std::string big(40000, 'b');
    ASSERT_TRUE(peer->send_app(bytes(big)));
    r = peer->read_app(big.size());
    EXPECT_EQ(r.data.size(), big.size());
    ASSERT_TRUE(peer->send_hostile(Hostile::empty_appdata));
    if (tls13()) {
        ASSERT_TRUE(peer->send_hostile(Hostile::padding_only));
        for (bool requested : {false, true}) {
            auto r = peer->send_key_update(requested);
            ASSERT_TRUE(r) << r.error().message();
        }
        ASSERT_TRUE(peer->send_hostile(Hostile::key_update_fragmented));
    }
    const std::string after = "after the key updates";
    ASSERT_TRUE(peer->send_app(bytes(after), 3));
    r = peer->read_app(after.size());
    EXPECT_EQ(std::string(r.data.begin(), r.data.end()), after) << to_string(r.how) << " " << r.detail;
    // OpenSSL answered update_requested with its own KeyUpdate, which the reader followed.
    if (tls13()) {
        EXPECT_EQ(peer->key_updates_received(), 1u);
    }
    ASSERT_TRUE(peer->send_close_notify());
    r = peer->read_until_close();
    EXPECT_EQ(r.how, CloseKind::close_notify);
    EXPECT_FALSE(r.alert);
}

struct AlertCase {
    Hostile kind;
    uint8_t alert;  // what OpenSSL 3.0 answers
};

TEST_P(HostilePeerVsOpenSsl, HostileRecordsGetOpenSslsAlertAndAnOrderlyClose) {
    // Every fatal hostile record, with RFC 8446's alert (hostile_records()); OpenSSL 3.0 agrees but
    // for one: a KeyUpdate body over 1 byte is over its message size limit for KeyUpdate, which it
    // answers with illegal_parameter (statem_lib.c, SSL_R_EXCESSIVE_MESSAGE_SIZE); RFC 8446 §6.2
    // names decode_error for a message of the wrong length.
    std::vector<AlertCase> cases;
    for (const auto& h : hostile_records())
        if (h.expected_alert != 0 && (tls13() || h.tls12))
            cases.push_back({h.kind, h.kind == Hostile::key_update_long ? uint8_t{47} : h.expected_alert});
    for (const auto& c : cases) {
        SCOPED_TRACE(hostile_records()[static_cast<size_t>(c.kind)].name);
        OpenSslEchoServer server(GetParam());
        auto peer = connect(server);
        ASSERT_TRUE(peer);
        ASSERT_TRUE(peer->send_hostile(c.kind));
        auto r = peer->read_until_close();
        ASSERT_TRUE(r.alert) << to_string(r.how) << " " << r.detail;
        EXPECT_EQ(alert_name(r.alert->description), alert_name(c.alert));
        EXPECT_EQ(r.alert->level, crypto::kAlertFatal);
        EXPECT_EQ(r.how, CloseKind::fin);
    }
}

INSTANTIATE_TEST_SUITE_P(Versions, HostilePeerVsOpenSsl,
                         ::testing::Values(config::TlsVersion::tls1_2, config::TlsVersion::tls1_3),
                         [](const auto& info) { return info.param == config::TlsVersion::tls1_3 ? "Tls13" : "Tls12"; });

TEST(PatternChecker, AgreesWithTheBackendAcrossAChunkEdgeAndFindsADifference) {
    // tests/e2e/backend.py: SHAKE-256(b"ztp-bytes" + k as 8 big-endian bytes); the first bytes of
    // chunks 0 and 1, as Python's hashlib gives them.
    const std::vector<uint8_t> chunk0 = {0xfb, 0x51, 0x75, 0x5e, 0x0a, 0x6c, 0xd7, 0xbd};
    const std::vector<uint8_t> chunk1 = {0x3f, 0x9f, 0x81, 0x68, 0x07, 0x3c, 0xb4, 0x12};
    const auto stream = PatternChecker::bytes_at(0, PatternChecker::kChunk + chunk1.size());
    EXPECT_TRUE(std::equal(chunk0.begin(), chunk0.end(), stream.begin()));
    EXPECT_TRUE(std::equal(chunk1.begin(), chunk1.end(), stream.end() - static_cast<long>(chunk1.size())));
    PatternChecker pieces;  // fed in uneven pieces across the edge
    for (size_t at = 0; at < stream.size(); at += 7777)
        EXPECT_TRUE(pieces.feed(std::span(stream).subspan(at, std::min<size_t>(7777, stream.size() - at))));
    EXPECT_EQ(pieces.offset(), stream.size());
    auto bad = stream;
    bad[PatternChecker::kChunk + 5] ^= 0x10;
    PatternChecker flipped;
    EXPECT_FALSE(flipped.feed(bad));
    EXPECT_EQ(flipped.first_mismatch, PatternChecker::kChunk + 5);
}

}  // namespace
}  // namespace ztp::hostile
