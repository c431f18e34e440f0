// The relay end to end inside one process: real TCP sockets, the real io_uring worker, real
// OpenSSL on both sides. Pins back-pressure, half-close in each direction, timeouts and teardown.
#include <fcntl.h>
#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <future>
#include <optional>
#include <random>

#include "crypto/record_layer.hpp"
#include "proxy/conn/stats.hpp"
#include "relay_test_support.hpp"

namespace ztp::testing {
namespace {

class RelayTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto c = app::generate_demo_certs(dir_.path());
        ASSERT_TRUE(c) << c.error().message();
        certs_ = *c;
    }
    std::string ca() const { return certs_.ca_cert.string(); }

    TempDir dir_;
    app::DemoCerts certs_;
};

std::string random_bytes(size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& ch : s) ch = static_cast<char>(rng());
    return s;
}

void echo(int fd) {
    char buf[65536];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        if (!send_all(fd, buf, static_cast<size_t>(n))) break;
    }
    ::shutdown(fd, SHUT_WR);
}

TEST_F(RelayTest, EchoesMegabytesBothWaysAtOnce) {
    TestBackend backend(echo);
    TestProxy proxy(certs_, backend.port());
    TlsClient client(proxy.port(), ca());
    ASSERT_TRUE(client.connected());
    // Both directions in flight together: 4 MiB is far more than every buffer on the path, so
    // this only completes if the relay keeps reading while it waits to write.
    std::string payload = random_bytes(4 << 20, 1);
    std::string got = duplex_exchange(client, payload);
    EXPECT_TRUE(got == payload) << "echo mismatch, got " << got.size() << " bytes";
}

TEST_F(RelayTest, ClientCloseNotifyBecomesBackendFinAndTheAnswerStillArrives) {
    TestBackend backend([](int fd) {
        std::string req = read_until_eof(fd);  // returns only on the FIN the proxy forwards
        std::string answer = "got " + std::to_string(req.size());
        send_all(fd, answer.data(), answer.size());
    });
    TestProxy proxy(certs_, backend.port());
    TlsClient client(proxy.port(), ca());
    ASSERT_TRUE(client.connected());
    ASSERT_TRUE(client.write_all(std::string(100'000, 'x')));
    client.close_notify();
    bool clean = false;
    EXPECT_EQ(client.read_to_end(&clean), "got 100000");
    EXPECT_TRUE(clean) << "the backend's FIN must reach the client as close_notify";
}

TEST_F(RelayTest, BackendFinBecomesCloseNotifyAndTheClientCanStillSend) {
    std::promise<std::string> received;
    TestBackend backend([&](int fd) {
        send_all(fd, "bye", 3);
        ::shutdown(fd, SHUT_WR);
        received.set_value(read_until_eof(fd));
    });
    TestProxy proxy(certs_, backend.port());
    TlsClient client(proxy.port(), ca());
    ASSERT_TRUE(client.connected());
    bool clean = false;
    EXPECT_EQ(client.read_to_end(&clean), "bye");
    EXPECT_TRUE(clean);
    ASSERT_TRUE(client.write_all("still here"));
    client.close_notify();
    auto f = received.get_future();
    ASSERT_EQ(f.wait_for(std::chrono::seconds(20)), std::future_status::ready);
    EXPECT_EQ(f.get(), "still here");
}

TEST_F(RelayTest, ASlowClientStopsTheBackendInsteadOfGrowingBuffers) {
    std::promise<size_t> accepted;
    TestBackend backend([&](int fd) {
        // Write as fast as possible until the path is full; count what got in.
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
        std::string chunk(1 << 16, 'z');
        size_t total = 0;
        int idle_rounds = 0;
        while (total < (512u << 20) && idle_rounds < 40) {
            ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
            if (n > 0) {
                total += static_cast<size_t>(n);
                idle_rounds = 0;
            } else {
                ++idle_rounds;
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
        }
        accepted.set_value(total);
    });
    TestProxy proxy(certs_, backend.port(), [](config::Policy& p) { p.limits.connection_buffer_bytes = 16384; });
    TlsClient client(proxy.port(), ca());
    ASSERT_TRUE(client.connected());
    auto f = accepted.get_future();
    ASSERT_EQ(f.wait_for(std::chrono::seconds(60)), std::future_status::ready);
    size_t total = f.get();
    // What can be in flight: kernel socket buffers on both hops (a few MiB each with
    // autotuning) plus the proxy's 16 KiB. Unbounded buffering would swallow all 512 MiB.
    EXPECT_LT(total, 64u << 20) << "the proxy kept reading from the backend while the client did not read";
}

// What the kernel holds for one established loopback TCP socket (local port → remote port), from
// /proc/net/tcp: tx = written but not yet acknowledged, rx = received but not yet read.
struct TcpQueues {
    uint64_t tx = 0;
    uint64_t rx = 0;
};

std::optional<TcpQueues> tcp_queues(uint16_t local_port, uint16_t remote_port) {
    std::ifstream f("/proc/net/tcp");
    std::string line;
    std::getline(f, line);  // the header
    while (std::getline(f, line)) {
        unsigned local = 0, remote = 0, state = 0;
        unsigned long long tx = 0, rx = 0;
        if (std::sscanf(line.c_str(), " %*u: %*8x:%4x %*8x:%4x %2x %llx:%llx", &local, &remote, &state, &tx, &rx) == 5 &&
            state == 1 /* TCP_ESTABLISHED */ && local == local_port && remote == remote_port)
            return TcpQueues{tx, rx};
    }
    return std::nullopt;
}

uint16_t local_port(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
}

uint16_t peer_port(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
}

class Sha256 {
public:
    Sha256() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
    void update(const void* data, size_t len) { EVP_DigestUpdate(ctx_.get(), data, len); }
    std::string hex() {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        EVP_DigestFinal_ex(ctx_.get(), md, &len);
        std::string out;
        char b[3];
        for (unsigned i = 0; i < len; ++i) {
            std::snprintf(b, sizeof b, "%02x", md[i]);
            out += b;
        }
        return out;
    }

private:
    std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

// Sends payload[from..] on the (non-blocking) client until all of it went out or nothing did for
// `quiet`; returns the new offset. OpenSSL's partial-write mode makes the offset exact: a write
// reports every record it handed to the kernel.
size_t write_until_stalled(TlsClient& c, const std::string& payload, size_t from, std::chrono::milliseconds quiet) {
    size_t sent = from;
    auto last_progress = std::chrono::steady_clock::now();
    while (sent < payload.size()) {
        size_t n = 0;
        // On WANT_WRITE the retry repeats exactly these arguments, as OpenSSL requires.
        int rc = SSL_write_ex(c.ssl(), payload.data() + sent, std::min<size_t>(payload.size() - sent, 65536), &n);
        if (rc == 1) {
            sent += n;
            last_progress = std::chrono::steady_clock::now();
            continue;
        }
        int e = SSL_get_error(c.ssl(), rc);
        ERR_clear_error();
        if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) break;
        if (std::chrono::steady_clock::now() - last_progress >= quiet) break;
        pollfd p{c.fd(), POLLOUT, 0};
        ::poll(&p, 1, 50);
    }
    return sent;
}

// The upload direction: a client that writes as fast as it can into a backend that has stopped
// reading. The proxy must stop reading the client once its own buffer is full, and the
// connection must then carry on intact when the backend reads again. Run on both user-space
// record paths; the kernel path (a splice pipe of connection_buffer bytes) needs kTLS, which
// the loopback suite's host does not have.
class UploadBackPressureTest : public ::testing::TestWithParam<config::RecordPathMode> {
protected:
    void SetUp() override {
        auto c = app::generate_demo_certs(dir_.path());
        ASSERT_TRUE(c) << c.error().message();
        certs_ = *c;
    }
    TempDir dir_;
    app::DemoCerts certs_;
};

TEST_P(UploadBackPressureTest, AStalledBackendStopsTheClientAndTheUploadCompletesIntact) {
    constexpr size_t kBuffer = 16384;
    const config::RecordPathMode path = GetParam();
    // What the proxy itself may hold of the upload once the backend stopped reading. OpenSSL path:
    // the relay's buffer plus the record OpenSSL is reading. Userspace path: the batches waiting
    // for the backend (kMaxQueuedBatches = 2) and the slot being received into, each a gated slot
    // of max(connection_buffer, 256 KiB) (proxy/conn/userspace_relay.cpp, worker.cpp).
    const size_t proxy_allowance = path == config::RecordPathMode::openssl
                                       ? kBuffer + 2 * crypto::kRecordMaxSize
                                       : 3 * std::max<size_t>(kBuffer, 256 * 1024) + crypto::kRecordMaxSize;
    const std::string payload = random_bytes(64 << 20, 5);

    std::promise<uint16_t> proxy_side_port;
    std::promise<void> go;
    std::shared_future<void> backend_may_read = go.get_future().share();
    TestBackend backend([&](int fd) {
        proxy_side_port.set_value(peer_port(fd));
        if (backend_may_read.wait_for(std::chrono::seconds(60)) != std::future_status::ready) return;
        Sha256 h;
        size_t total = 0;
        char buf[65536];
        ssize_t n;
        while ((n = recv_retrying(fd, buf, sizeof buf)) > 0) {
            h.update(buf, static_cast<size_t>(n));
            total += static_cast<size_t>(n);
        }
        std::string answer = std::to_string(total) + " " + h.hex();
        send_all(fd, answer.data(), answer.size());
    });
    TestProxy proxy(certs_, backend.port(), [&](config::Policy& p) {
        p.limits.connection_buffer_bytes = kBuffer;
        p.listeners[0].tls.record_path = path;
    });
    // Whatever fails below, the backend's handler must not outlive the test waiting.
    struct Release {
        std::promise<void>& go;
        bool done = false;
        void operator()() {
            if (!done) go.set_value();
            done = true;
        }
        ~Release() { (*this)(); }
    } release{go};
    auto& up_on_path = conn::stats().bytes_up_by_path[conn::record_path_index(to_string(path))];
    const uint64_t up_before = up_on_path.load();

    TlsClient client(proxy.port(), certs_.ca_cert.string());
    ASSERT_TRUE(client.connected());
    SSL_set_mode(client.ssl(), SSL_MODE_ENABLE_PARTIAL_WRITE);
    auto port_future = proxy_side_port.get_future();
    ASSERT_EQ(port_future.wait_for(std::chrono::seconds(20)), std::future_status::ready);
    const uint16_t proxy_out_port = port_future.get();
    const int flags = ::fcntl(client.fd(), F_GETFL);
    ::fcntl(client.fd(), F_SETFL, flags | O_NONBLOCK);

    // Phase 1: write until nothing more goes in for two seconds.
    const size_t accepted = write_until_stalled(client, payload, 0, std::chrono::seconds(2));
    ASSERT_LT(accepted, payload.size()) << "the whole upload went in while the backend read nothing";

    // Account for every accepted byte the kernel holds along the path; the rest is in the proxy.
    // (The client-side queues hold ciphertext, counted as if it were plaintext: that can only
    // understate what the proxy holds, by the records' overhead of 22 bytes in 16 KiB.)
    const uint16_t client_port = local_port(client.fd());
    auto client_q = tcp_queues(client_port, proxy.port());
    auto proxy_in = tcp_queues(proxy.port(), client_port);
    auto proxy_out = tcp_queues(proxy_out_port, backend.port());
    auto backend_q = tcp_queues(backend.port(), proxy_out_port);
    ASSERT_TRUE(client_q && proxy_in && proxy_out && backend_q) << "a socket of the path is missing from /proc/net/tcp";
    const uint64_t in_kernel = client_q->tx + proxy_in->rx + proxy_out->tx + backend_q->rx;
    const int64_t in_proxy = static_cast<int64_t>(accepted) - static_cast<int64_t>(in_kernel);
    EXPECT_LE(in_proxy, static_cast<int64_t>(proxy_allowance))
        << "accepted " << accepted << " bytes; kernel queues: client tx " << client_q->tx << ", proxy in rx "
        << proxy_in->rx << ", proxy out tx " << proxy_out->tx << ", backend rx " << backend_q->rx;
    // The stall is the proxy's doing, not the client's: its socket towards the client is full.
    EXPECT_GT(proxy_in->rx, 0u);

    // Phase 2: the backend reads again; the rest of the upload goes through, then close_notify.
    release();
    const size_t sent = write_until_stalled(client, payload, accepted, std::chrono::seconds(30));
    ASSERT_EQ(sent, payload.size()) << "the upload did not resume once the backend read again";
    ::fcntl(client.fd(), F_SETFL, flags);
    client.close_notify();
    bool clean = false;
    Sha256 want;
    want.update(payload.data(), payload.size());
    EXPECT_EQ(client.read_to_end(&clean), std::to_string(payload.size()) + " " + want.hex());
    EXPECT_TRUE(clean);
    // The connection ended and was counted on the record path it was forced onto.
    for (int i = 0; i < 200 && up_on_path.load() < up_before + payload.size(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(up_on_path.load() - up_before, payload.size());
}

INSTANTIATE_TEST_SUITE_P(RecordPaths, UploadBackPressureTest,
                         ::testing::Values(config::RecordPathMode::userspace, config::RecordPathMode::openssl),
                         [](const auto& info) { return std::string(to_string(info.param)); });

TEST_F(RelayTest, StalledHandshakeIsClosedAtTheDeadline) {
    TestBackend backend(echo);
    TestProxy proxy(certs_, backend.port(),
                    [](config::Policy& p) { p.limits.handshake_timeout = std::chrono::milliseconds(300); });
    auto before = conn::stats().handshake_timeouts.load();
    UniqueFd raw = connect_loopback(proxy.port());
    ASSERT_TRUE(raw);
    set_recv_timeout(raw.get(), 20);
    send_all(raw.get(), "\x16\x03\x01", 3);  // the start of a ClientHello, then nothing
    char buf[64];
    EXPECT_LE(recv_retrying(raw.get(), buf, sizeof buf), 0) << "the proxy must close the stalled connection";
    EXPECT_GT(conn::stats().handshake_timeouts.load(), before);
}

TEST_F(RelayTest, UnreachableBackendGivesCloseNotifyAndTheProxyKeepsServing) {
    uint16_t dead_port = 0;
    { UniqueFd tmp = listen_loopback(dead_port); }  // bound then closed: nothing listens there
    TestProxy proxy(certs_, dead_port);
    auto before = conn::stats().backend_connect_failures.load();
    TlsClient client(proxy.port(), ca());
    ASSERT_TRUE(client.connected());
    bool clean = false;
    EXPECT_EQ(client.read_to_end(&clean), "");
    EXPECT_TRUE(clean) << "a clean close_notify, not a reset or a hang";
    EXPECT_EQ(conn::stats().backend_connect_failures.load(), before + 1);
    TlsClient again(proxy.port(), ca());
    EXPECT_TRUE(again.connected());
}

TEST_F(RelayTest, FailsOverToTheNextBackendAddress) {
    uint16_t dead_port = 0;
    { UniqueFd tmp = listen_loopback(dead_port); }
    TestBackend backend(echo);
    TestProxy proxy(certs_, dead_port, [&](config::Policy& p) {
        p.backends[0].addresses.push_back(*SocketAddress::parse("127.0.0.1:" + std::to_string(backend.port())));
    });
    for (int i = 0; i < 4; ++i) {  // whichever address round-robin starts with
        TlsClient client(proxy.port(), ca());
        ASSERT_TRUE(client.connected());
        ASSERT_TRUE(client.write_all("ping"));
        EXPECT_EQ(client.read(4), "ping");
    }
}

TEST_F(RelayTest, ManyConcurrentConnections) {
    TestBackend backend(echo);
    TestProxy proxy(certs_, backend.port());
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 64; ++i) {
        threads.emplace_back([&, i] {
            TlsClient client(proxy.port(), ca());
            if (!client.connected()) return;
            std::string msg = random_bytes(10'000 + i, static_cast<unsigned>(i));
            if (!client.write_all(msg)) return;
            if (client.read(msg.size()) == msg) ++ok;
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 64);
}

TEST_F(RelayTest, ClientResetTearsDownTheBackendConnection) {
    std::promise<void> backend_saw_end;
    std::atomic<bool> first{true};
    TestBackend backend([&](int fd) {
        if (!first.exchange(false)) return echo(fd);  // the follow-up connection below
        std::string chunk(1 << 16, 'd');
        while (send_all(fd, chunk.data(), chunk.size())) {
        }
        backend_saw_end.set_value();
    });
    TestProxy proxy(certs_, backend.port());
    {
        TlsClient client(proxy.port(), ca());
        ASSERT_TRUE(client.connected());
        EXPECT_EQ(client.read(100'000).size(), 100'000u);
        linger l{1, 0};  // close with RST, mid-stream
        setsockopt(client.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    auto f = backend_saw_end.get_future();
    EXPECT_EQ(f.wait_for(std::chrono::seconds(20)), std::future_status::ready)
        << "the backend connection must be closed when the client goes away";
    TlsClient again(proxy.port(), ca());
    EXPECT_TRUE(again.connected());
}

}  // namespace
}  // namespace ztp::testing
