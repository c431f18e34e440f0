// The relay end to end inside one process: real TCP sockets, the real io_uring worker, real
// OpenSSL on both sides. Pins back-pressure, half-close in each direction, timeouts and teardown.
#include <fcntl.h>

#include <future>
#include <random>

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
