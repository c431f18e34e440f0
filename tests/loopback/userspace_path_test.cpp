// The gated userspace record path on real sockets: tampered records never reach the backend,
// the client is told (bad_record_mac, or the alert a refused header earns), even while a download
// to it is in flight; KeyUpdate works both ways mid-stream, floods are refused. The tamper cases run
// on the OpenSSL record path too: both must refuse, tell and count alike.
#include <poll.h>

#include <future>

#include "proxy/conn/stats.hpp"
#include "relay_test_support.hpp"

namespace ztp::testing {
namespace {

// Where one bit (the length cases: one field) of the client's target record is changed.
enum class Flip {
    ciphertext,
    tag,
    header_length,      // one byte shorter: the tag no longer lines up
    type_unknown,       // 0x17 -> 0x1f: no such content type
    type_handshake,     // 0x17 -> 0x16: a handshake record
    version,            // 0x0303 -> 0x0302
    length_over_limit,  // the length's top bit: 2^15 more than the record has
};

const char* to_string(Flip f) {
    switch (f) {
        case Flip::ciphertext: return "Ciphertext";
        case Flip::tag: return "Tag";
        case Flip::header_length: return "HeaderLength";
        case Flip::type_unknown: return "TypeUnknown";
        case Flip::type_handshake: return "TypeHandshake";
        case Flip::version: return "Version";
        case Flip::length_over_limit: return "LengthOverLimit";
    }
    return "?";
}

void tamper(std::string& record, Flip flip) {
    const size_t len = record.size() - 5;
    switch (flip) {
        case Flip::ciphertext: record[5 + 9] ^= 0x01; break;
        case Flip::tag: record[record.size() - 1] ^= static_cast<char>(0x80); break;
        case Flip::header_length:
            record[3] = static_cast<char>((len - 1) >> 8);
            record[4] = static_cast<char>((len - 1) & 0xff);
            break;
        case Flip::type_unknown: record[0] ^= 0x08; break;
        case Flip::type_handshake: record[0] ^= 0x01; break;
        case Flip::version: record[2] ^= 0x01; break;
        case Flip::length_over_limit: record[3] ^= static_cast<char>(0x80); break;
    }
}

// A TCP man in the middle between the client and the proxy that tampers with the client's n-th
// application-data-typed record (outer type 23) and forwards everything else untouched.
class FlippingForwarder {
public:
    FlippingForwarder(uint16_t proxy_port, int target_record, Flip flip)
        : proxy_port_(proxy_port), target_(target_record), flip_(flip) {
        listen_ = listen_loopback(port_);
        thread_ = std::thread([this] { run(); });
    }
    ~FlippingForwarder() {
        ::shutdown(listen_.get(), SHUT_RDWR);
        thread_.join();
    }
    uint16_t port() const { return port_; }

private:
    void run() {
        UniqueFd client(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!client) return;
        UniqueFd proxy = connect_loopback(proxy_port_);
        std::thread back([&] {  // proxy → client, untouched
            char buf[65536];
            ssize_t n;
            while ((n = recv_retrying(proxy.get(), buf, sizeof buf)) > 0)
                if (!send_all(client.get(), buf, static_cast<size_t>(n))) break;
            ::shutdown(client.get(), SHUT_WR);
        });
        std::string pending;
        char buf[65536];
        int seen = 0;
        ssize_t n;
        while ((n = recv_retrying(client.get(), buf, sizeof buf)) > 0) {
            pending.append(buf, static_cast<size_t>(n));
            // Forward whole records only, so the flip lands where it is aimed.
            while (pending.size() >= 5) {
                size_t len = (static_cast<uint8_t>(pending[3]) << 8) | static_cast<uint8_t>(pending[4]);
                if (pending.size() < 5 + len) break;
                std::string record = pending.substr(0, 5 + len);
                pending.erase(0, 5 + len);
                if (record[0] == 23 && ++seen == target_) tamper(record, flip_);
                if (!send_all(proxy.get(), record.data(), record.size())) break;
            }
        }
        ::shutdown(proxy.get(), SHUT_WR);
        back.join();
    }

    uint16_t proxy_port_;
    int target_;
    Flip flip_;
    UniqueFd listen_;
    uint16_t port_ = 0;
    std::thread thread_;
};

// Records what the backend received, and when it saw the end.
struct Recorder {
    std::mutex mu;
    std::string got;
    std::promise<void> ended;
    void operator()(int fd) {
        char buf[65536];
        ssize_t n;
        while ((n = recv_retrying(fd, buf, sizeof buf)) > 0) {
            std::lock_guard lock(mu);
            got.append(buf, static_cast<size_t>(n));
        }
        ended.set_value();
    }
    std::string snapshot() {
        std::lock_guard lock(mu);
        return got;
    }
};

bool wait_for(const std::function<bool()>& cond) {
    for (int i = 0; i < 2000 && !cond(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return cond();
}

void use_userspace(config::Policy& p) { p.listeners[0].tls.record_path = config::RecordPathMode::userspace; }
void use_openssl(config::Policy& p) { p.listeners[0].tls.record_path = config::RecordPathMode::openssl; }

struct Suite {
    int version;
    const char* cipher;  // OpenSSL's name
};
const Suite kSuites[] = {{TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256"},
                         {TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384"},
                         {TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256"},
                         {TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256"},
                         {TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384"},
                         {TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305"}};

void PrintTo(const Suite& s, std::ostream* os) { *os << s.cipher; }

std::string suite_name(const Suite& s) {
    std::string n = std::string(s.version == TLS1_3_VERSION ? "Tls13_" : "Tls12_") + s.cipher;
    for (char& c : n)
        if (c == '-') c = '_';
    return n;
}

// TLS 1.3: the client's first outer-type-23 record is its Finished; TLS 1.2: the first data.
int second_data_record(int version) { return version == TLS1_3_VERSION ? 3 : 2; }

// What the client is told and how the refusal is counted.
struct Expected {
    const char* alert;  // OpenSSL's reason string on the client
    std::atomic<uint64_t>* counter;
    const char* close;
};

Expected expected(bool openssl_path, int version, Flip flip) {
    auto& s = conn::stats();
    const Expected bad_mac{"sslv3 alert bad record mac", &s.bad_records, "bad_record"};
    const Expected unexpected{"sslv3 alert unexpected message", &s.malformed_records, "malformed_record"};
    switch (flip) {
        case Flip::ciphertext:
        case Flip::tag:
        case Flip::header_length: return bad_mac;
        // TLS 1.2: 0x16 is a type that exists, and the type is in the AAD: the tag fails.
        case Flip::type_handshake: return version == TLS1_3_VERSION ? unexpected : bad_mac;
        // OpenSSL tries a TLS 1.2 tag before the type; we refuse the header (RFC 5246 §6).
        case Flip::type_unknown: return version == TLS1_3_VERSION || !openssl_path ? unexpected : bad_mac;
        // OpenSSL 3.0 says protocol_version for a TLS 1.2 record version, we decode_error.
        case Flip::version:
            return {openssl_path && version == TLS1_2_VERSION ? "tlsv1 alert protocol version" : "tlsv1 alert decode error",
                    &s.malformed_records, "malformed_record"};
        case Flip::length_over_limit: return {"tlsv1 alert record overflow", &s.malformed_records, "record_overflow"};
    }
    return {};
}

struct TamperCase {
    bool openssl_path;
    Suite suite;
    Flip flip;
};

void PrintTo(const TamperCase& c, std::ostream* os) {
    *os << (c.openssl_path ? "openssl " : "userspace ") << c.suite.cipher << " " << to_string(c.flip);
}

std::vector<TamperCase> tamper_cases() {
    std::vector<TamperCase> out;
    for (bool openssl_path : {false, true})
        for (const Suite& s : kSuites)
            for (Flip f : {Flip::ciphertext, Flip::tag, Flip::header_length, Flip::type_unknown, Flip::type_handshake,
                           Flip::version, Flip::length_over_limit})
                out.push_back({openssl_path, s, f});
    return out;
}

template <typename Param>
class WithCerts : public ::testing::TestWithParam<Param> {
protected:
    void SetUp() override {
        auto c = app::generate_demo_certs(dir_.path());
        ASSERT_TRUE(c);
        certs_ = *c;
    }
    TempDir dir_;
    app::DemoCerts certs_;
};

class TamperTest : public WithCerts<TamperCase> {};

TEST_P(TamperTest, TheBackendGetsNothingOfATamperedRecordAndTheClientIsTold) {
    const auto [openssl_path, suite, flip] = GetParam();
    const Expected want = expected(openssl_path, suite.version, flip);
    Recorder recorder;
    TestBackend backend(std::ref(recorder));
    TestProxy proxy(certs_, backend.port(), openssl_path ? use_openssl : use_userspace);
    FlippingForwarder mitm(proxy.port(), second_data_record(suite.version), flip);
    auto& closed = conn::stats().connections_closed[conn::close_reason_index(want.close)];
    const uint64_t counted = want.counter->load();
    const uint64_t closed_before = closed.load();

    TlsClient client(mitm.port(), certs_.ca_cert.string(), "localhost", suite.version, suite.cipher);
    ASSERT_TRUE(client.connected());
    ASSERT_EQ(client.cipher(), suite.cipher);
    ASSERT_TRUE(client.write_all("first record"));
    ASSERT_TRUE(wait_for([&] { return recorder.snapshot() == "first record"; })) << recorder.snapshot();
    ASSERT_TRUE(client.write_all("SECRET second record"));

    bool clean = true;
    EXPECT_EQ(client.read_to_end(&clean), "");
    EXPECT_FALSE(clean) << "the connection must end with an alert, not close_notify";
    EXPECT_EQ(client.last_error(), want.alert);
    auto f = recorder.ended.get_future();
    ASSERT_EQ(f.wait_for(std::chrono::seconds(20)), std::future_status::ready);
    EXPECT_EQ(recorder.snapshot(), "first record") << "no byte of the tampered record may reach the backend";
    EXPECT_EQ(want.counter->load(), counted + 1);
    EXPECT_TRUE(wait_for([&] { return closed.load() == closed_before + 1; })) << "close=" << want.close;
}

INSTANTIATE_TEST_SUITE_P(All, TamperTest, ::testing::ValuesIn(tamper_cases()),
                         [](const ::testing::TestParamInfo<TamperCase>& i) {
                             return std::string(i.param.openssl_path ? "OpenSsl_" : "Userspace_") +
                                    suite_name(i.param.suite) + "_" + to_string(i.param.flip);
                         });

// The download's bytes, by stream offset: what the client got must be a prefix of it.
char download_byte(uint64_t i) { return static_cast<char>((i * 2654435761u) >> 13); }

// A backend that streams a download as fast as it is taken, while recording what it receives.
struct Downloader {
    Recorder recorder;
    std::atomic<uint64_t> sent{0};
    void operator()(int fd) {
        std::thread up([&] { recorder(fd); });
        std::string chunk(65536, '\0');
        for (uint64_t off = 0;; off += chunk.size()) {
            for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = download_byte(off + i);
            if (!send_all(fd, chunk.data(), chunk.size())) break;  // the proxy closed (or 20 s stuck)
            sent += chunk.size();
        }
        up.join();
    }
};

class AlertDuringDownloadTest : public WithCerts<Suite> {};

// The bad_record_mac alert must not be lost when the tampered record arrives while records of a
// download are still on their way to the client: it goes out after them, whole.
TEST_P(AlertDuringDownloadTest, TheAlertFollowsTheRecordsInFlight) {
    const Suite suite = GetParam();
    Downloader downloader;
    TestBackend backend(std::ref(downloader));
    TestProxy proxy(certs_, backend.port(), use_userspace);
    FlippingForwarder mitm(proxy.port(), second_data_record(suite.version), Flip::ciphertext);
    const uint64_t bad_before = conn::stats().bad_records.load();

    TlsClient client(mitm.port(), certs_.ca_cert.string(), "localhost", suite.version, suite.cipher);
    ASSERT_TRUE(client.connected());
    ASSERT_EQ(client.cipher(), suite.cipher);
    ASSERT_TRUE(client.write_all("first record"));
    ASSERT_TRUE(wait_for([&] { return downloader.recorder.snapshot() == "first record"; }));
    // The client reads nothing yet: once the download stalls, every buffer on its way is full and
    // the proxy is stuck in a send to the client (it reads the backend only between sends). A
    // second without progress: a busy machine can pause a flowing download for a moment.
    uint64_t last = 0;
    int quiet = 0;
    for (int i = 0; i < 800 && quiet < 40; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
        const uint64_t now = downloader.sent.load();
        quiet = now == last && now > 0 ? quiet + 1 : 0;
        last = now;
    }
    ASSERT_EQ(quiet, 40) << "the download never stalled";
    ASSERT_TRUE(client.write_all("SECRET second record"));
    ASSERT_TRUE(wait_for([&] { return conn::stats().bad_records.load() == bad_before + 1; }))
        << "the proxy must see the tampered record while its send is stuck";

    bool clean = true;
    const std::string got = client.read_to_end(&clean);
    EXPECT_FALSE(clean);
    EXPECT_EQ(client.last_error(), "sslv3 alert bad record mac") << "after " << got.size() << " bytes";
    EXPECT_GT(got.size(), 0u);
    size_t mismatch = 0;
    while (mismatch < got.size() && got[mismatch] == download_byte(mismatch)) ++mismatch;
    EXPECT_EQ(mismatch, got.size()) << "the client must get the download's records intact before the alert";
    auto f = downloader.recorder.ended.get_future();
    ASSERT_EQ(f.wait_for(std::chrono::seconds(20)), std::future_status::ready);
    EXPECT_EQ(downloader.recorder.snapshot(), "first record") << "no byte of the tampered record may reach the backend";
    EXPECT_EQ(conn::stats().bad_records.load(), bad_before + 1);
}

INSTANTIATE_TEST_SUITE_P(All, AlertDuringDownloadTest, ::testing::ValuesIn(kSuites),
                         [](const ::testing::TestParamInfo<Suite>& i) { return suite_name(i.param); });

class UserspacePathTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto c = app::generate_demo_certs(dir_.path());
        ASSERT_TRUE(c);
        certs_ = *c;
    }
    TempDir dir_;
    app::DemoCerts certs_;
};

void echo(int fd) {
    char buf[65536];
    ssize_t n;
    while ((n = recv_retrying(fd, buf, sizeof buf)) > 0)
        if (!send_all(fd, buf, static_cast<size_t>(n))) break;
    ::shutdown(fd, SHUT_WR);
}

TEST_F(UserspacePathTest, KeyUpdateBothWaysMidStreamKeepsTheConnectionWorking) {
    TestBackend backend(echo);
    TestProxy proxy(certs_, backend.port(), use_userspace);
    TlsClient client(proxy.port(), certs_.ca_cert.string());
    ASSERT_TRUE(client.connected());
    auto before = conn::stats().key_updates.load();
    for (int round = 0; round < 3; ++round) {
        std::string msg(20000 + round, static_cast<char>('a' + round));
        ASSERT_TRUE(client.write_all(msg));
        ASSERT_TRUE(client.read(msg.size()) == msg) << "round " << round << ": " << client.last_error();
        // update_requested obliges the proxy to answer with its own KeyUpdate: the next reply
        // is sealed under its new key, which the client only reads if the answer came.
        ASSERT_EQ(SSL_key_update(client.ssl(), round % 2 ? SSL_KEY_UPDATE_NOT_REQUESTED : SSL_KEY_UPDATE_REQUESTED), 1);
    }
    std::string last(70000, 'z');
    ASSERT_TRUE(client.write_all(last));
    EXPECT_TRUE(client.read(last.size()) == last) << client.last_error();
    EXPECT_EQ(conn::stats().key_updates.load(), before + 3);
}

TEST_F(UserspacePathTest, AKeyUpdateFloodIsRefused) {
    TestBackend backend(echo);
    TestProxy proxy(certs_, backend.port(), use_userspace);
    TlsClient client(proxy.port(), certs_.ca_cert.string());
    ASSERT_TRUE(client.connected());
    auto before = conn::stats().key_updates.load();
    bool ok = true;
    for (int i = 0; i < 50 && ok; ++i) {
        SSL_key_update(client.ssl(), SSL_KEY_UPDATE_NOT_REQUESTED);
        ok = client.write_all("x");
    }
    bool clean = true;
    std::string echoed = client.read_to_end(&clean);  // echoes of bytes before the refusal may come
    EXPECT_LT(echoed.size(), 50u);
    EXPECT_FALSE(clean) << "the proxy must end the connection, not answer it with close_notify";
    auto followed = conn::stats().key_updates.load() - before;
    EXPECT_GE(followed, 1u);
    EXPECT_LT(followed, 50u) << "the proxy must stop following KeyUpdates and close the connection";
}

TEST_F(UserspacePathTest, LargeTransfersBothWaysAtOnce) {
    TestBackend backend(echo);
    TestProxy proxy(certs_, backend.port(), use_userspace);
    TlsClient client(proxy.port(), certs_.ca_cert.string());
    ASSERT_TRUE(client.connected());
    std::string payload(8 << 20, '\0');
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 2654435761u >> 13);
    std::string got = duplex_exchange(client, payload);
    EXPECT_TRUE(got == payload) << "got " << got.size() << " bytes";
}

TEST_F(UserspacePathTest, RequestsAfterAnIdleWaitUseBurstSlotsAndStreamsUseBulkSlots) {
    constexpr int kRequests = 20;
    TestBackend backend(echo);
    {
        TestProxy proxy(certs_, backend.port(), use_userspace);
        TlsClient client(proxy.port(), certs_.ca_cert.string());
        ASSERT_TRUE(client.connected());
        for (int i = 0; i < kRequests; ++i) {  // each waits for its echo: the proxy idles in between
            std::string req(100, static_cast<char>('a' + i));
            ASSERT_TRUE(client.write_all(req));
            ASSERT_TRUE(client.read(req.size()) == req) << client.last_error();
        }
        proxy.stop();
        io::GatedPools pools = proxy.worker().gated_pools();
        // Each request: one call opening its burst slot whole, one re-gating it.
        EXPECT_GE(pools.burst.mprotect_calls(), 2u * kRequests);
        EXPECT_EQ(pools.bulk.mprotect_calls(), 0u);
        EXPECT_EQ(pools.burst.slots_in_use() + pools.bulk.slots_in_use(), 0u);
    }
    {
        TestProxy proxy(certs_, backend.port(), use_userspace);
        TlsClient client(proxy.port(), certs_.ca_cert.string());
        ASSERT_TRUE(client.connected());
        std::string payload(4 << 20, 'x');
        for (size_t i = 0; i < payload.size(); i += 4096) payload[i] = static_cast<char>(i >> 12);
        EXPECT_TRUE(duplex_exchange(client, payload) == payload);
        proxy.stop();
        io::GatedPools pools = proxy.worker().gated_pools();
        EXPECT_GT(pools.bulk.mprotect_calls(), 0u) << "a stream must go on in bulk slots";
    }
}

}  // namespace
}  // namespace ztp::testing
