// The relay core without sockets: relays run against a fake completion queue (fake_ring.hpp) that
// completes their operations in orders the kernel could produce — short and partial sends, receives
// racing a send's completion, deferred polls — and checks what the kernel would see. Every test
// here checks the three properties of the relay core:
//   * every byte is delivered once, in order, both ways;
//   * every lease is released exactly once (the pools get every buffer and slot back; a second
//     release asserts in debug builds);
//   * nothing writes into memory an in-flight operation holds.
// Label: hostile-unit, which both `ctest -L unit` and `ctest -L hostile` select.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <malloc.h>

#include <random>

#if defined(__SANITIZE_ADDRESS__)
// From the sanitizer runtime (its allocator_interface.h is not installed with every compiler).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif

#include "crypto/kernel_record_path.hpp"
#include "crypto/record_layer.hpp"
#include "fake_ring.hpp"
#include "proxy/conn/record_path_relay.hpp"
#include "proxy/conn/splice_relay.hpp"
#include "proxy/conn/stats.hpp"
#include "proxy/conn/userspace_relay.hpp"
#include "proxy/io/gated_pool.hpp"
#include "proxy/io/pipe_pool.hpp"
#include "redact_test_support.hpp"

namespace ztp::testing {
namespace {

using crypto::ContentType;
using Kind = FakeRing::Kind;

// Never real descriptors: the few plain syscalls a relay makes on them (shutdown) fail harmlessly.
constexpr int kClientFd = 1 << 20;
constexpr int kBackendFd = (1 << 20) + 1;

crypto::DirectionKeys keys(uint8_t salt) {
    crypto::DirectionKeys k;
    k.version = config::TlsVersion::tls1_3;
    k.cipher = config::Cipher::aes_128_gcm;
    std::vector<uint8_t> key(16, salt), iv(12, static_cast<uint8_t>(salt + 1));
    EXPECT_TRUE(k.key.assign(key));
    EXPECT_TRUE(k.iv.assign(iv));
    return k;
}

crypto::SecretBytes traffic_secret(uint8_t salt) {
    crypto::SecretBytes s;
    EXPECT_TRUE(s.assign(std::vector<uint8_t>(32, static_cast<uint8_t>(salt + 2))));
    return s;
}

// The TLS client: seals what it sends, opens what the proxy sent, follows the proxy's KeyUpdates.
struct Client {
    crypto::RecordWriter w = crypto::RecordWriter::create(keys(1), traffic_secret(1)).value();
    crypto::RecordReader r = crypto::RecordReader::create(keys(5), traffic_secret(5)).value();
    std::string to_proxy;    // wire bytes the proxy has not received yet
    std::string from_proxy;  // wire bytes received, not yet a whole record
    std::string sent, got;   // application data both ways
    bool closed = false;     // sent close_notify
    bool got_close_notify = false;
    size_t max_fragment = crypto::kRecordMaxPlaintext;  // the max_fragment_length it negotiated
    std::string error;

    void seal(const std::string& plain, ContentType type) {
        std::vector<uint8_t> buf(w.headroom() + plain.size() + w.tailroom());
        std::memcpy(buf.data() + w.headroom(), plain.data(), plain.size());
        auto n = w.seal_in_place(buf, plain.size(), type);
        ASSERT_TRUE(n) << n.error().message();
        to_proxy.append(reinterpret_cast<const char*>(buf.data()), *n);
    }
    void send(const std::string& plain) {
        for (size_t off = 0; off < plain.size(); off += crypto::kRecordMaxPlaintext)
            seal(plain.substr(off, crypto::kRecordMaxPlaintext), ContentType::application_data);
        sent += plain;
    }
    void key_update(bool requested) {
        std::vector<uint8_t> buf(64);
        auto n = w.seal_key_update(buf, requested);
        ASSERT_TRUE(n) << n.error().message();
        to_proxy.append(reinterpret_cast<const char*>(buf.data()), *n);
    }
    void close_notify() {
        std::vector<uint8_t> buf(64);
        auto n = w.seal_alert(buf, crypto::kAlertWarning, crypto::kAlertCloseNotify);
        ASSERT_TRUE(n);
        to_proxy.append(reinterpret_cast<const char*>(buf.data()), *n);
        closed = true;
    }
    // Opens every whole record the proxy sent so far.
    void receive(const std::string& wire) {
        from_proxy += wire;
        while (error.empty() && from_proxy.size() >= crypto::kRecordHeaderSize) {
            std::span<uint8_t> all(reinterpret_cast<uint8_t*>(from_proxy.data()), from_proxy.size());
            auto need = r.record_size(all);
            if (!need) return void(error = "record header: " + need.error().message());
            if (*need > all.size()) return;
            auto rec = r.open_in_place(all.first(*need));
            if (!rec) return void(error = "record from the proxy did not open: " + rec.error().message());
            std::string plain(from_proxy, rec->plaintext_offset, rec->plaintext_size);
            if (plain.size() > max_fragment) error = "a record over the negotiated max_fragment_length";
            if (got_close_notify) error = "a record after close_notify";
            if (rec->type == ContentType::application_data) got += plain;
            if (rec->type == ContentType::handshake && plain.size() == 5 && plain[0] == 24 && !r.rekey())
                error = "rekey";
            if (rec->type == ContentType::alert) {
                if (plain[1] != crypto::kAlertCloseNotify) error = "alert " + std::to_string(plain[1]);
                got_close_notify = true;
            }
            from_proxy.erase(0, *need);
        }
    }
};

// What the relay runs on: the fake ring, the worker's pools, and the connection's bookkeeping.
class Host final : public conn::RelayHost, public io::CompletionHandler {
public:
    FakeRing ring;
    std::unique_ptr<io::GatedPool> bulk = io::GatedPool::create(256 * 1024, 8).value();
    std::unique_ptr<io::GatedPool> burst =
        io::GatedPool::create(crypto::kRecordMaxSize, 4, io::GatedPool::Layout::isolated).value();
    io::BufferPool buffer_pool{conn::UserspaceRelay::kBatchRecords * crypto::kRecordMaxSize, 16};
    std::unique_ptr<conn::Relay> relay;  // declared after the pools: destroyed before them
    int inflight = 0;
    bool finished = false;
    std::string failed;

    io::Submitter& loop() override { return ring; }
    io::CompletionHandler& completion_target() override { return *this; }
    io::BufferPool& buffers() override { return buffer_pool; }
    void op_submitted() override { ++inflight; }
    void activity() override {}
    void relay_finished(const char*) override { finished = true; }
    void relay_failed(const char* reason, const std::string& detail) override {
        failed = std::string(reason) + ": " + detail;
    }
    void on_completion(uint8_t tag, int res, uint32_t) override {
        --inflight;
        relay->on_completion(tag, res);
    }

    void start_userspace() { start_userspace(io::GatedPools{*bulk, *burst}, conn::RedactionStage{}); }
    // `max_fragment`: the client's max_fragment_length (RFC 6066), the most plaintext per record.
    void start_userspace(io::GatedPools pools, conn::RedactionStage up, conn::RedactionStage down = {},
                         size_t max_fragment = crypto::kRecordMaxPlaintext) {
        relay = std::make_unique<conn::UserspaceRelay>(
            *this, pools, crypto::RecordReader::create(keys(1), traffic_secret(1)).value(),
            crypto::RecordWriter::create(keys(5), traffic_secret(5), max_fragment).value(), config::TlsVersion::tls1_3,
            kClientFd, kBackendFd, 64 * 1024, std::move(up), std::move(down));
        relay->start();
    }
};

// Drives both peers: the client above, and a backend that sends `backend.to_proxy`.
struct Peers {
    explicit Peers(Host& h) : host(h) {
        // A readiness that fired: what the peer has sent by now is there to read at once.
        host.ring.on_recv_now = [this](int fd, void* buf, size_t len) -> long {
            std::string& in = inbound(fd);
            if (in.empty()) return ended(fd) ? 0 : -EAGAIN;
            size_t n = std::min(len, in.size());
            n = 1 + static_cast<size_t>(recv_now_cut * static_cast<double>(n - 1));
            std::memcpy(buf, in.data(), n);
            in.erase(0, n);
            return static_cast<long>(n);
        };
    }
    Host& host;
    double recv_now_cut = 1.0;  // how much of what is there a recv_now() gets, like complete()'s cut
    Client client;
    std::string backend_to_proxy, backend_sent, backend_got;
    bool backend_fin = false;

    // Bytes `fd`'s peer has for the proxy, and whether it ended.
    std::string& inbound(int fd) { return fd == kClientFd ? client.to_proxy : backend_to_proxy; }
    bool ended(int fd) const { return fd == kBackendFd && backend_fin; }

    bool completable(const FakeRing::Pending& p) {
        if (p.cancelled || p.kind == Kind::timeout || p.kind == Kind::send) return true;
        if (p.kind == Kind::poll || p.kind == Kind::recv) return !inbound(p.fd).empty() || ended(p.fd);
        return false;
    }

    // Completes pending op `i`. `cut` in [0, 1) picks how much of what is possible happens: the size
    // of a receive, the part of a send the kernel took.
    void complete(size_t i, double cut) {
        const FakeRing::Pending& p = host.ring.pending()[i];
        if (p.cancelled) return host.ring.complete(i, -ECANCELED);
        switch (p.kind) {
            case Kind::poll: return host.ring.complete(i, POLLIN);
            case Kind::timeout: return host.ring.complete(i, -ETIME);
            case Kind::recv: {
                std::string& in = inbound(p.fd);
                size_t n = std::min(p.len, in.size());
                n = n == 0 ? 0 : 1 + static_cast<size_t>(cut * static_cast<double>(n - 1));
                std::string bytes = in.substr(0, n);
                in.erase(0, n);
                return host.ring.complete_recv(i, bytes);
            }
            case Kind::send: {
                size_t n = p.len == 0 ? 0 : 1 + static_cast<size_t>(cut * static_cast<double>(p.len - 1));
                std::string wire;
                const int fd = p.fd;
                host.ring.complete_send(i, n, wire);
                if (fd == kClientFd) client.receive(wire);
                else backend_got += wire;
                return;
            }
            default: FAIL() << "unexpected op kind";
        }
    }

    // Completes the oldest completable op in full; false when none is.
    bool complete_next() {
        for (size_t i = 0; i < host.ring.pending().size(); ++i)
            if (completable(host.ring.pending()[i]) && host.ring.pending()[i].kind != Kind::timeout) {
                complete(i, 1.0);
                return true;
            }
        return false;
    }
    void run_to_quiet() {
        for (int guard = 0; guard < 100000 && complete_next(); ++guard) {
        }
    }
    int find(int fd, Kind kind) {
        int i = host.ring.find(fd, kind);
        EXPECT_GE(i, 0) << "no pending op of that kind on " << (fd == kClientFd ? "the client" : "the backend");
        return i;
    }
    void backend_sends(const std::string& bytes) {
        backend_to_proxy += bytes;
        backend_sent += bytes;
    }
};

std::string pattern(size_t n, uint32_t seed) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (seed + i * 7) % 26);
    return s;
}

// A rule route for the property tests: one literal rule both ways, on_pause = hold, so what the
// relay outputs must be exactly the reference rewrite of what went in, however it was cut.
struct SecretRoute {
    std::vector<config::RedactRule> rules{redact::testing::lit("secret", "SECRET-42")};
    std::shared_ptr<const redact::Database> db = redact::testing::compile(rules);
    redact::Scratch scratch;
    redact::RuleSet::RouteRules route;
    SecretRoute() {
        EXPECT_TRUE(db && scratch.grow_for(*db));
        route.request = route.response = db;
        route.on_pause = config::OnPause::hold;
    }
    conn::RedactionStage stage(config::RuleDirection d) {
        return conn::RedactionStage::open(route, d, &scratch).value();
    }
    std::string expect(const std::string& in) const { return redact::testing::reference(in, rules); }
};

// The userspace relay's routes: rules on either direction (towards the client, the stage's output is
// copied into record slots; on a plain route the backend's bytes are received into the slots and
// sealed where they lie), and a client that negotiated a small max_fragment_length.
struct UserspaceRoute {
    const char* name;
    bool up_rules;
    bool down_rules;
    size_t max_fragment;
};
void PrintTo(const UserspaceRoute& r, std::ostream* os) { *os << r.name; }
const UserspaceRoute kUserspaceRoutes[] = {
    {"plain", false, false, crypto::kRecordMaxPlaintext},
    {"rules_up", true, false, crypto::kRecordMaxPlaintext},
    {"rules_down", false, true, crypto::kRecordMaxPlaintext},
    {"rules_both_ways", true, true, crypto::kRecordMaxPlaintext},
    {"plain_max_fragment_512", false, false, 512},
    {"rules_down_max_fragment_1024", false, true, 1024},
};

void start(Peers& peers, SecretRoute& secret, const UserspaceRoute& route) {
    Host& host = peers.host;
    peers.client.max_fragment = route.max_fragment;
    auto stage = [&](bool rules, config::RuleDirection d) { return rules ? secret.stage(d) : conn::RedactionStage{}; };
    host.start_userspace(io::GatedPools{*host.bulk, *host.burst}, stage(route.up_rules, config::RuleDirection::request),
                         stage(route.down_rules, config::RuleDirection::response), route.max_fragment);
}

// Bug 1 of issue 12: the client's KeyUpdate(update_requested) goes out while the relay waits on the
// backend; backend bytes arrive before that send completes. The records sealed from them must stay
// untouched until their own send completes: no receive into them, no return to the pool.
class RelayCoreUserspaceKeyUpdate : public ::testing::TestWithParam<UserspaceRoute> {};

TEST_P(RelayCoreUserspaceKeyUpdate, RecordsOnTheWireAreNeverOverwrittenAfterAKeyUpdateAnswer) {
    SecretRoute secret;
    Host host;
    Peers peers(host);
    start(peers, secret, GetParam());

    peers.client.key_update(true);
    host.ring.complete(peers.find(kClientFd, Kind::poll), POLLIN);  // read at once, in the same turn
    const int answer = peers.find(kClientFd, Kind::send);  // our KeyUpdate, alone
    ASSERT_GE(answer, 0);

    peers.backend_sends(pattern(100, 1));
    host.ring.complete(peers.find(kBackendFd, Kind::poll), POLLIN);
    peers.complete(peers.find(kBackendFd, Kind::recv), 1.0);  // lands while the answer is in flight

    // The answer completes; the records sealed from the first backend bytes go out, and while they
    // are on the wire the backend has more.
    peers.complete(static_cast<size_t>(peers.find(kClientFd, Kind::send)), 1.0);
    const int records = peers.find(kClientFd, Kind::send);
    ASSERT_GE(records, 0);
    peers.backend_sends(pattern(100, 2));
    for (int i = 0; i < 4; ++i) {
        int b = host.ring.find(kBackendFd, Kind::poll);
        if (b < 0) b = host.ring.find(kBackendFd, Kind::recv);
        if (b < 0) break;
        peers.complete(static_cast<size_t>(b), 1.0);
    }
    peers.backend_fin = true;
    peers.client.close_notify();
    peers.run_to_quiet();

    EXPECT_EQ(host.ring.violations(), std::vector<std::string>{});
    EXPECT_EQ(peers.client.error, "");
    EXPECT_EQ(peers.client.got, peers.backend_sent);
    EXPECT_TRUE(host.finished) << host.failed;
    host.relay.reset();
    EXPECT_EQ(host.buffer_pool.leased(), 0u);
    EXPECT_EQ(host.bulk->slots_in_use() + host.burst->slots_in_use(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Routes, RelayCoreUserspaceKeyUpdate, ::testing::ValuesIn(kUserspaceRoutes),
                         [](const auto& info) { return std::string(info.param.name); });

// The property test: random traffic both ways with KeyUpdates, completed in random orders with
// random receive sizes and short sends, many seeds, on every route above (on_pause = hold, so the
// output of a direction with rules is the reference's).
class RelayCoreUserspaceProperty : public ::testing::TestWithParam<UserspaceRoute> {};

TEST_P(RelayCoreUserspaceProperty, EveryByteOnceInOrderEveryLeaseBackNothingWrittenInFlight) {
    const UserspaceRoute& route = GetParam();
    const bool with_rules = route.up_rules || route.down_rules;
    SecretRoute secret;
    for (uint32_t seed = 1; seed <= (with_rules ? 100u : 200u); ++seed) {
        SCOPED_TRACE("seed " + std::to_string(seed));
        std::mt19937 rng(seed);
        std::uniform_real_distribution<double> unit(0.0, 1.0);
        Host host;
        Peers peers(host);
        start(peers, secret, route);
        size_t client_left = 40'000 + rng() % 200'000, backend_left = 40'000 + rng() % 400'000;
        int key_updates_left = 3;
        for (int step = 0; step < 200000 && !host.finished && host.failed.empty(); ++step) {
            const double what = unit(rng);
            if (what < 0.08 && client_left > 0) {
                size_t n = std::min<size_t>(client_left, 1 + rng() % (unit(rng) < 0.3 ? 40'000 : 2'000));
                std::string t = pattern(n, static_cast<uint32_t>(client_left));
                if (n > 20 && unit(rng) < 0.3) t.replace(rng() % (n - 9), 9, "SECRET-42");
                peers.client.send(t);
                client_left -= n;
                if (key_updates_left > 0 && unit(rng) < 0.15) {
                    peers.client.key_update(true);
                    --key_updates_left;
                }
                if (client_left == 0) peers.client.close_notify();
                continue;
            }
            if (what < 0.16 && backend_left > 0) {
                size_t n = std::min<size_t>(backend_left, 1 + rng() % (unit(rng) < 0.3 ? 300'000 : 3'000));
                std::string t = pattern(n, static_cast<uint32_t>(backend_left));
                if (n > 20 && unit(rng) < 0.3) t.replace(rng() % (n - 9), 9, "SECRET-42");
                peers.backend_sends(t);
                backend_left -= n;
                peers.backend_fin = backend_left == 0;
                continue;
            }
            std::vector<size_t> ready;
            for (size_t i = 0; i < host.ring.pending().size(); ++i)
                if (peers.completable(host.ring.pending()[i])) ready.push_back(i);
            if (ready.empty()) {
                if (client_left == 0 && backend_left == 0) break;
                continue;
            }
            peers.recv_now_cut = unit(rng);
            peers.complete(ready[rng() % ready.size()], unit(rng));
            ASSERT_LE(host.buffer_pool.leased(), 1u) << "one record buffer per connection";
        }
        ASSERT_EQ(host.failed, "");
        ASSERT_TRUE(host.finished);
        ASSERT_EQ(host.ring.violations(), std::vector<std::string>{});
        ASSERT_EQ(peers.client.error, "");
        ASSERT_EQ(peers.backend_got, route.up_rules ? secret.expect(peers.client.sent) : peers.client.sent);
        ASSERT_EQ(peers.client.got, route.down_rules ? secret.expect(peers.backend_sent) : peers.backend_sent);
        ASSERT_TRUE(peers.client.got_close_notify);
        host.relay.reset();
        ASSERT_EQ(host.buffer_pool.leased(), 0u);
        ASSERT_EQ(host.bulk->slots_in_use() + host.burst->slots_in_use(), 0u);
    }
}

INSTANTIATE_TEST_SUITE_P(Routes, RelayCoreUserspaceProperty, ::testing::ValuesIn(kUserspaceRoutes),
                         [](const auto& info) { return std::string(info.param.name); });

// A client's readiness that completes is read in the same loop turn (a non-blocking recv), not
// through a second io_uring RECV; a readiness with nothing behind it waits again holding no slot.
TEST(RelayCoreUserspace, AReadinessIsReadInTheSameTurnAndASpuriousOneHoldsNoSlot) {
    Host host;
    Peers peers(host);
    host.start_userspace();
    host.ring.complete(peers.find(kClientFd, Kind::poll), POLLIN);  // spurious: nothing was sent
    EXPECT_GE(host.ring.find(kClientFd, Kind::poll), 0) << "waits for readiness again";
    EXPECT_EQ(host.bulk->slots_in_use() + host.burst->slots_in_use(), 0u);

    peers.client.send("GET / HTTP/1.1\r\n\r\n");
    const size_t submitted = host.ring.submitted();
    host.ring.complete(peers.find(kClientFd, Kind::poll), POLLIN);
    EXPECT_EQ(host.ring.find(kClientFd, Kind::recv), -1) << "a RECV submitted for bytes already there";
    ASSERT_GE(host.ring.find(kBackendFd, Kind::send), 0);
    EXPECT_EQ(host.ring.submitted(), submitted + 2) << "the backend send and the next readiness wait only";
    peers.run_to_quiet();
    EXPECT_EQ(peers.backend_got, "GET / HTTP/1.1\r\n\r\n");
    EXPECT_EQ(host.ring.violations(), std::vector<std::string>{});
}

// Issue 12: verified records that precede a bad record in the same read reach the backend (as on
// the kernel and OpenSSL paths, which deliver record by record); then the client gets its alert.
TEST(RelayCoreUserspace, VerifiedRecordsBeforeABadOneInTheSameReadAreForwarded) {
    Host host;
    Peers peers(host);
    host.start_userspace();
    peers.client.send("first record;");
    peers.client.send("second record;");
    const size_t good = peers.client.to_proxy.size();
    peers.client.send("third, tampered");
    peers.client.to_proxy[good + 8] ^= 0x01;  // one ciphertext bit of the third record
    host.ring.complete(peers.find(kClientFd, Kind::poll), POLLIN);  // all three records in one read
    peers.run_to_quiet();
    EXPECT_EQ(peers.backend_got, "first record;second record;");
    EXPECT_EQ(host.failed.rfind("bad_record", 0), 0u) << host.failed;
    EXPECT_EQ(peers.client.error, "alert 20") << "bad_record_mac, after the records";
    EXPECT_EQ(host.ring.violations(), std::vector<std::string>{});
    host.relay.reset();
    EXPECT_EQ(host.bulk->slots_in_use() + host.burst->slots_in_use(), 0u);
}

// Issue 12 (measured: 150 slow clients on a rule route, all closed `overloaded`): clients typing a
// bearer token one byte per record hold a possible match open; held-back bytes must not pin gated
// slots, and a worker whose slots are all busy makes a client wait, never fail.
TEST(RelayCoreUserspace, SlowTypistsOnARuleRouteHoldNoSlotAndNobodyIsOverloaded) {
    auto db = redact::testing::compile({redact::testing::lit("token", "Bearer secret-token-0123456789")});
    ASSERT_TRUE(db);
    redact::DirectionTotals totals;
    auto counters = std::make_shared<redact::StreamCounters>();
    counters->totals = &totals;
    counters->rules = {std::make_shared<redact::RuleMatches>()};
    redact::Scratch scratch;
    ASSERT_TRUE(scratch.grow_for(*db));
    // hold: this test is about slots, so no pause may release (or mask) the typed prefix early.
    redact::RuleSet::RouteRules rules;
    rules.request = db;
    rules.request_counters = counters;
    rules.on_pause = config::OnPause::hold;
    Host pools;  // only its gated pools: 8 bulk + 4 burst slots for every typist below
    constexpr int kTypists = 40;
    std::vector<std::unique_ptr<Host>> hosts;
    std::vector<std::unique_ptr<Peers>> peers;
    for (int i = 0; i < kTypists; ++i) {
        hosts.push_back(std::make_unique<Host>());
        peers.push_back(std::make_unique<Peers>(*hosts.back()));
        auto stage = conn::RedactionStage::open(rules, config::RuleDirection::request, &scratch);
        ASSERT_TRUE(stage);
        hosts.back()->start_userspace(io::GatedPools{*pools.bulk, *pools.burst}, std::move(stage).value());
    }
    const std::string typed = "GET / HTTP/1.1\r\nAuthorization: Bearer secret-tok";
    for (char c : typed)
        for (int i = 0; i < kTypists; ++i) {
            peers[i]->client.send(std::string(1, c));
            peers[i]->run_to_quiet();
        }
    for (int i = 0; i < kTypists; ++i) EXPECT_EQ(hosts[i]->failed, "") << "typist " << i;
    EXPECT_EQ(pools.bulk->slots_in_use() + pools.burst->slots_in_use(), 0u) << "held-back bytes pin slots";
    // Every slot busy elsewhere: a client waits (no read, no failure) and goes on once one is free.
    std::vector<io::GatedBuffer> hog;
    for (io::GatedPool* p : {pools.bulk.get(), pools.burst.get()})
        while (auto b = p->acquire()) hog.push_back(std::move(b).value());
    Host& late = *hosts[0];
    peers[0]->client.send("en-0123456789 and more");
    peers[0]->run_to_quiet();
    EXPECT_EQ(late.failed, "");
    ASSERT_EQ(pools.bulk->waiting(), 1u) << "waits for a slot";
    hog.clear();
    EXPECT_EQ(pools.bulk->wake_waiters() + pools.burst->wake_waiters(), 1u);  // the worker's safe point
    peers[0]->run_to_quiet();
    peers[0]->client.close_notify();
    peers[0]->backend_fin = true;
    peers[0]->run_to_quiet();
    EXPECT_EQ(late.failed, "");
    EXPECT_NE(peers[0]->backend_got.find("Authorization: ****************************** and more"), std::string::npos)
        << peers[0]->backend_got;
    for (auto& h : hosts) h->relay.reset();
    EXPECT_EQ(pools.bulk->slots_in_use() + pools.burst->slots_in_use(), 0u);
}

// A record path whose client is scripted: what it reads, how much it lets us write.
class ScriptedPath final : public crypto::RecordPath {
public:
    std::string to_read;          // client plaintext not yet read
    size_t read_size = SIZE_MAX;  // at most this much per read (1: one-byte records)
    bool endless = false;         // read() never runs dry (a flood)
    bool fin = false;             // once to_read is empty, the client's stream ended
    size_t write_room = 0;        // bytes write() accepts before it would block
    std::string written;
    bool close_notify = false;

    const char* rx_name() const override { return "openssl"; }
    const char* tx_name() const override { return "openssl"; }
    bool copies_plaintext() const override { return true; }
    crypto::IoResult read(std::span<std::byte> out) override {
        if (endless) {
            size_t n = std::min(out.size(), read_size);
            std::memset(out.data(), 'x', n);
            return {crypto::IoStatus::ok, n};
        }
        if (to_read.empty()) return {fin ? crypto::IoStatus::eof : crypto::IoStatus::want_read};
        size_t n = std::min({out.size(), read_size, to_read.size()});
        std::memcpy(out.data(), to_read.data(), n);
        to_read.erase(0, n);
        return {crypto::IoStatus::ok, n};
    }
    crypto::IoResult write(std::span<const std::byte> in) override {
        if (close_notify) return {crypto::IoStatus::error, 0, "write after close_notify"};
        size_t n = std::min(in.size(), write_room);
        if (n == 0) return {crypto::IoStatus::want_write};
        written.append(reinterpret_cast<const char*>(in.data()), n);
        write_room -= n;
        return {crypto::IoStatus::ok, n};
    }
    crypto::IoResult shutdown_write() override {
        close_notify = true;
        return {crypto::IoStatus::ok};
    }
};

// The relay core of the OpenSSL and kernel record paths in front of a scripted client, not yet
// started: the test scripts the client (returned), then starts the relay.
ScriptedPath& make_path_relay(Host& host, size_t chunk = 64 * 1024, conn::RedactionStage up = {},
                              conn::RedactionStage down = {}) {
    auto path = std::make_unique<ScriptedPath>();
    ScriptedPath& client = *path;
    host.relay = std::make_unique<conn::RecordPathRelay>(host, std::move(path), kClientFd, kBackendFd, chunk,
                                                         std::move(up), std::move(down));
    return client;
}

// Issue 12: at the drain deadline or an idle timeout, close_notify must not go out while bytes are
// still queued towards the client: it would make a truncated close-delimited body look complete.
TEST(RelayCorePlain, AGoodbyeWithBytesQueuedClosesWithoutCloseNotify) {
    Host host;
    Peers peers(host);
    ScriptedPath& client = make_path_relay(host);
    host.relay->start();
    peers.backend_sends(pattern(5000, 3));
    client.write_room = 1000;  // the client reads slowly: most of it stays queued
    peers.run_to_quiet();
    ASSERT_EQ(client.written, pattern(5000, 3).substr(0, 1000));
    const uint64_t truncated = conn::stats().truncated_closes.load();
    host.relay->say_goodbye();  // the idle timeout fired
    EXPECT_FALSE(client.close_notify) << "close_notify ahead of 4000 queued bytes";
    EXPECT_EQ(conn::stats().truncated_closes.load(), truncated + 1);
}

// A backend read that leaves the chunk's tail too short for the next one, written to the client at
// once: the next read needs a fresh chunk, and with one chunk per direction (plain routes) the old
// one must be gone by then. A receive's op record that kept its lease until after the kick left the
// download stalled with nothing in flight (found end to end: 60 KiB of an 8 MiB download).
TEST(RelayCorePlain, AReadThatFillsTheChunkIsFollowedByTheNextOne) {
    Host host;
    Peers peers(host);
    ScriptedPath& client = make_path_relay(host);
    host.relay->start();
    const std::string body = pattern(1 << 20, 9);
    peers.backend_sends(body);
    client.write_room = SIZE_MAX;  // the client takes everything at once
    peers.run_to_quiet();
    EXPECT_EQ(client.written.size(), body.size());
    EXPECT_TRUE(client.written == body);
}

TEST(RelayCorePlain, AGoodbyeWithNothingQueuedSendsCloseNotify) {
    Host host;
    Peers peers(host);
    ScriptedPath& client = make_path_relay(host);
    host.relay->start();
    peers.backend_sends(pattern(5000, 3));
    client.write_room = 5000;
    peers.run_to_quiet();
    host.relay->say_goodbye();
    EXPECT_TRUE(client.close_notify);
}

// Heap bytes in use by this process (the sanitizer's allocator keeps its own count).
size_t heap_in_use() {
#if defined(__SANITIZE_ADDRESS__)
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 m = ::mallinfo2();
    return m.uordblks + m.hblkhd;
#endif
}

// Issue 12 (measured: 18 MiB -> 2.2 GiB RSS in 20 s): 1-byte records into a stalled backend, and
// 1-byte segments from a backend towards a client that stopped reading, on the relay core of the
// OpenSSL and kernel paths, plain and rule route. Memory is bounded in chunks: a byte costs a byte of
// a chunk, never a chunk.
TEST(RelayCorePathRelay, OneByteFloodsIntoStalledPeersStayWithinTheChunkCap) {
    constexpr size_t kChunk = 4096;
    SecretRoute secret;
    for (bool rules : {false, true}) {
        SCOPED_TRACE(rules ? "rule route" : "plain route");
        auto stage = [&](config::RuleDirection d) { return rules ? secret.stage(d) : conn::RedactionStage{}; };
        Host host;
        const size_t before = heap_in_use();
        ScriptedPath& client = make_path_relay(host, kChunk, stage(config::RuleDirection::request),
                                               stage(config::RuleDirection::response));
        client.endless = true;
        client.read_size = 1;
        host.relay->start();  // reads the client until the direction is at its cap; the backend never takes it
        int recvs = 0;
        for (int i = 0; i < 100000; ++i) {
            if (int poll = host.ring.find(kBackendFd, Kind::poll); poll >= 0) {
                host.ring.complete(static_cast<size_t>(poll), POLLIN);
                continue;
            }
            int recv = host.ring.find(kBackendFd, Kind::recv);
            if (recv < 0) break;
            host.ring.complete_recv(static_cast<size_t>(recv), "y");  // the client never reads (write_room 0)
            ++recvs;
        }
        EXPECT_GT(recvs, 1000);
        EXPECT_EQ(host.ring.find(kBackendFd, Kind::recv), -1) << "the backend is still read past the cap";
        EXPECT_EQ(client.written, "");
        const size_t grown = heap_in_use() - before;
        // Per direction: kMaxChunks chunks (plain routes: one pooled buffer) and kMaxSegments plan
        // segments (an iovec and a chunk reference each: well under 1 KiB), plus the relay itself.
        using R = conn::RecordPathRelay;
        const size_t chunks = rules ? R::kMaxChunks * kChunk : host.buffer_pool.buffer_size();
        EXPECT_LT(grown, 2 * (chunks + R::kMaxSegments * 1024) + 64 * 1024) << "bytes held: " << grown;
        EXPECT_EQ(host.ring.violations(), std::vector<std::string>{});
    }
}

// The relay core's record-path configurations (OpenSSL and kernel record paths, with and without
// rules), over random traffic both ways completed in random orders: random receive sizes, short
// sends, a client that reads and writes in random amounts, spurious readiness, pause timers.
struct PathRelayConfig {
    const char* name;
    bool rules;    // a literal rule both ways (on_pause = hold: the output is the reference's)
    size_t chunk;  // connection_buffer
};

void PrintTo(const PathRelayConfig& c, std::ostream* os) { *os << c.name; }

class RelayCorePathRelayProperty : public ::testing::TestWithParam<PathRelayConfig> {};

TEST_P(RelayCorePathRelayProperty, EveryByteOnceInOrderEveryLeaseBackNothingWrittenInFlight) {
    const PathRelayConfig cfg = GetParam();
    SecretRoute secret;
    for (uint32_t seed = 1; seed <= 150; ++seed) {
        SCOPED_TRACE("seed " + std::to_string(seed));
        std::mt19937 rng(seed);
        std::uniform_real_distribution<double> unit(0.0, 1.0);
        auto stage = [&](config::RuleDirection d) { return cfg.rules ? secret.stage(d) : conn::RedactionStage{}; };
        Host host;
        Peers peers(host);
        ScriptedPath& client = make_path_relay(host, cfg.chunk, stage(config::RuleDirection::request),
                                               stage(config::RuleDirection::response));
        client.read_size = unit(rng) < 0.3 ? 1 + rng() % 8 : 1 + rng() % 20'000;
        host.relay->start();
        std::string client_sent;
        size_t client_left = 1'000 + rng() % 60'000, backend_left = 1'000 + rng() % 200'000;
        auto traffic = [&](size_t n, uint32_t salt) {
            std::string t = pattern(n, salt);
            if (n > 20 && unit(rng) < 0.5) t.replace(rng() % (n - 9), 9, "SECRET-42");
            return t;
        };
        for (int step = 0; step < 300000 && !host.finished && host.failed.empty(); ++step) {
            const double what = unit(rng);
            if (what < 0.05 && client_left > 0) {
                size_t n = std::min<size_t>(client_left, 1 + rng() % 5'000);
                std::string t = traffic(n, static_cast<uint32_t>(client_left));
                client.to_read += t;
                client_sent += t;
                client_left -= n;
                client.fin = client_left == 0;
                continue;
            }
            if (what < 0.10 && backend_left > 0) {
                size_t n = std::min<size_t>(backend_left, 1 + rng() % 30'000);
                peers.backend_sends(traffic(n, static_cast<uint32_t>(backend_left)));
                backend_left -= n;
                peers.backend_fin = backend_left == 0;
                continue;
            }
            if (what < 0.15) {
                client.write_room += rng() % 20'000;
                continue;
            }
            std::vector<size_t> ready;
            for (size_t i = 0; i < host.ring.pending().size(); ++i) {
                const auto& p = host.ring.pending()[i];
                // The client's readiness may fire at any time: spurious wake-ups are the kernel's right.
                if (peers.completable(p) || (p.kind == Kind::poll && p.fd == kClientFd)) ready.push_back(i);
            }
            if (ready.empty()) continue;
            const size_t i = ready[rng() % ready.size()];
            if (host.ring.pending()[i].kind == Kind::poll && host.ring.pending()[i].fd == kClientFd)
                host.ring.complete(i, POLLIN | POLLOUT);
            else
                peers.complete(i, unit(rng));
        }
        ASSERT_EQ(host.failed, "");
        ASSERT_TRUE(host.finished);
        ASSERT_EQ(host.ring.violations(), std::vector<std::string>{});
        const auto expect = [&](const std::string& in) { return cfg.rules ? secret.expect(in) : in; };
        ASSERT_EQ(peers.backend_got, expect(client_sent));
        ASSERT_EQ(client.written, expect(peers.backend_sent));
        ASSERT_TRUE(client.close_notify);
        host.relay.reset();
        ASSERT_EQ(host.buffer_pool.leased(), 0u);
    }
}

INSTANTIATE_TEST_SUITE_P(Configurations, RelayCorePathRelayProperty,
                         ::testing::Values(PathRelayConfig{"plain", false, 64 * 1024},
                                           PathRelayConfig{"plain_small_buffer", false, 4096},
                                           PathRelayConfig{"rules", true, 64 * 1024},
                                           PathRelayConfig{"rules_small_chunks", true, 4096}),
                         [](const auto& info) { return std::string(info.param.name); });

// The splice relay (the kernel path's plain routes): real pipes from a PipePool and real socket
// pairs for the client's and the backend's descriptors, while splice_now() is the test's: it moves
// the peers' streams into the pipes and out of them in random pieces, and answers EAGAIN at random
// (a source with nothing yet, a pipe full by slots, a destination whose send buffer is full). The
// relay's own writes on the descriptors are real: the FIN towards the backend (shutdown) and the
// close_notify towards the client (a kTLS record on a kTLS socket; on a Unix socket its 2 bytes).
struct SpliceRig {
    io::PipePool pipes{64 * 1024, 4};  // outlives the relay, which gives its pipes back
    Host host;
    int client[2] = {-1, -1}, backend[2] = {-1, -1};  // [0] the relay's, [1] the peer's
    struct Stream {
        std::string bytes;
        size_t off = 0;
        bool fin = false;  // the peer ends its stream once every byte was read
    } from_client, from_backend;
    std::string to_client, to_backend;  // what splice delivered
    std::mt19937 rng{1};
    double p_eagain = 0;  // chance of EAGAIN from a pipe holding bytes, or from a destination
    size_t max_piece = 16384;
    size_t eagains = 0, moves = 0;

    SpliceRig() {
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, client), 0);
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, backend), 0);
        host.ring.on_splice_now = [this](int in, int out, size_t len) { return splice(in, out, len); };
    }
    ~SpliceRig() {
        host.relay.reset();
        for (int fd : {client[0], client[1], backend[0], backend[1]}) ::close(fd);
    }
    void start() {
        auto path = std::make_unique<crypto::KernelRecordPath>(
            client[0], crypto::KtlsKeyUpdates(config::TlsVersion::tls1_2, config::Cipher::aes_128_gcm, {}, {}));
        host.relay = std::make_unique<conn::SpliceRelay>(host, pipes, std::move(path), client[0], backend[0]);
        host.relay->start();
    }
    bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }
    size_t piece(size_t most) { return std::uniform_int_distribution<size_t>(1, std::min(most, max_piece))(rng); }

    long splice(int in, int out, size_t len) {
        long n = in == client[0] || in == backend[0] ? from_socket(in == client[0] ? from_client : from_backend, out, len)
                                                      : to_socket(in, out == client[0] ? to_client : to_backend, len);
        if (n > 0) ++moves;
        if (n < 0) ++eagains;
        return n;
    }
    long from_socket(Stream& s, int pipe_w, size_t len) {
        const size_t left = s.bytes.size() - s.off;
        if (left == 0) return s.fin ? 0 : -EAGAIN;
        int queued = 0;  // a pipe holding bytes may be full by slots
        if (::ioctl(pipe_w, FIONREAD, &queued) == 0 && queued > 0 && chance(p_eagain)) return -EAGAIN;
        const ssize_t n = ::write(pipe_w, s.bytes.data() + s.off, piece(std::min(len, left)));
        if (n < 0) return -errno;
        s.off += static_cast<size_t>(n);
        return n;
    }
    long to_socket(int pipe_r, std::string& got, size_t len) {
        if (chance(p_eagain)) return -EAGAIN;
        std::string buf(piece(len), '\0');
        const ssize_t n = ::read(pipe_r, buf.data(), buf.size());
        if (n < 0) return -errno;
        got.append(buf, 0, static_cast<size_t>(n));
        return n;
    }
    // The peers end their streams: the client's FIN is real (the relay tells it from an empty
    // record by POLLRDHUP), the backend's is the fake splice's 0.
    void client_fin() {
        from_client.fin = true;
        ::shutdown(client[1], SHUT_WR);
    }
    int poll_on(int fd, unsigned events) const {
        for (size_t i = 0; i < host.ring.pending().size(); ++i) {
            const auto& p = host.ring.pending()[i];
            if (p.fd == fd && p.kind == Kind::poll && p.events == events) return static_cast<int>(i);
        }
        return -1;
    }
    // What the peers' ends of the sockets received from the relay itself.
    std::string close_notify_seen() const {
        char b[16];
        const ssize_t n = ::recv(client[1], b, sizeof b, MSG_DONTWAIT | MSG_PEEK);
        return n > 0 ? std::string(b, static_cast<size_t>(n)) : std::string();
    }
    bool backend_fin_seen() const {
        char b;
        return ::recv(backend[1], &b, 1, MSG_DONTWAIT | MSG_PEEK) == 0;
    }
};

// Issue 12: a pipe is full by slots, not by bytes. EAGAIN from a fill while the pipe holds bytes
// parks the reader until the drain made progress; retrying at once would spin.
TEST(RelayCoreSplice, EagainWithBytesInThePipeParksTheReaderUntilTheWriterDrains) {
    SpliceRig rig;
    FakeRing& ring = rig.host.ring;
    rig.from_backend.bytes = pattern(200, 1);
    rig.max_piece = 100;
    rig.p_eagain = 1;  // the client's socket is full, and so are the pipe's slots once it holds bytes
    rig.start();
    EXPECT_EQ(rig.moves, 1u);
    const size_t calls = ring.splices_now();
    EXPECT_LE(calls, 6u) << "retried without progress";
    EXPECT_EQ(rig.poll_on(rig.backend[0], POLLIN), -1) << "the reader waits behind the drain, not on the backend";
    const int writable = rig.poll_on(rig.client[0], POLLOUT);
    ASSERT_GE(writable, 0) << "the drain waits for the client's socket";
    rig.p_eagain = 0;
    ring.complete(static_cast<size_t>(writable), POLLOUT);  // room: the drain makes progress
    EXPECT_EQ(rig.to_client, rig.from_backend.bytes);
    EXPECT_GE(rig.poll_on(rig.backend[0], POLLIN), 0) << "the reader resumes once the pipe is empty";
}

// Issue 12: with plaintext still in the pipe, a goodbye closes without close_notify.
TEST(RelayCoreSplice, AGoodbyeWithBytesInThePipeClosesWithoutCloseNotify) {
    SpliceRig rig;
    rig.from_backend.bytes = pattern(100, 1);
    rig.p_eagain = 1;
    rig.start();
    const uint64_t truncated = conn::stats().truncated_closes.load();
    rig.host.relay->say_goodbye();
    EXPECT_EQ(conn::stats().truncated_closes.load(), truncated + 1);
    EXPECT_EQ(rig.close_notify_seen(), "") << "close_notify with bytes still in the pipe";
}

// A backend that always has more must not keep the worker's loop to itself: a kick yields after a
// bounded number of splices, with a readiness armed that brings it back in the next loop turn.
TEST(RelayCoreSplice, AnEndlessSourceYieldsTheLoop) {
    SpliceRig rig;
    rig.from_backend.bytes = std::string(64 << 20, 'x');
    rig.start();
    EXPECT_LT(rig.host.ring.splices_now(), 100u);
    EXPECT_LT(rig.to_client.size(), 2u << 20);
    EXPECT_TRUE(rig.poll_on(rig.client[0], POLLOUT) >= 0 || rig.poll_on(rig.backend[0], POLLIN) >= 0);
}

// Every ordering the kernel could produce: both streams arrive in random pieces, every end answers
// EAGAIN at random, readiness fires in any order and spuriously. Every byte arrives once, in order;
// the FIN towards the backend and the close_notify towards the client come strictly after the last
// byte; nothing is retried without progress; the pipes go back to the pool empty.
class RelayCoreSpliceProperty : public ::testing::TestWithParam<int> {};

TEST_P(RelayCoreSpliceProperty, EveryByteOnceInOrderAndTheEndsLast) {
    SpliceRig rig;
    rig.rng.seed(static_cast<unsigned>(GetParam()));
    std::uniform_int_distribution<size_t> size(0, 300 * 1024);
    rig.from_client.bytes = pattern(size(rig.rng), 3);
    rig.from_backend.bytes = pattern(size(rig.rng), 4);
    rig.p_eagain = std::uniform_real_distribution<double>(0, 0.6)(rig.rng);
    rig.max_piece = rig.chance(0.5) ? 64 : 16384;
    rig.start();
    FakeRing& ring = rig.host.ring;
    for (int step = 0; step < 200000 && !rig.host.finished && rig.host.failed.empty(); ++step) {
        if (rig.from_client.off == rig.from_client.bytes.size() && !rig.from_client.fin) rig.client_fin();
        if (rig.from_backend.off == rig.from_backend.bytes.size()) rig.from_backend.fin = true;
        ASSERT_FALSE(ring.pending().empty())
            << "the relay waits for nothing; client " << rig.from_client.off << "/" << rig.from_client.bytes.size()
            << " fin " << rig.from_client.fin << " -> " << rig.to_backend.size() << ", backend " << rig.from_backend.off
            << "/" << rig.from_backend.bytes.size() << " -> " << rig.to_client.size() << " step " << step;
        std::uniform_int_distribution<size_t> pick(0, ring.pending().size() - 1);
        const size_t i = pick(rig.rng);
        const size_t eagains = rig.eagains, moves = rig.moves;
        ring.complete(i, static_cast<int>(ring.pending()[i].events));
        ASSERT_LE(rig.eagains - eagains, rig.moves - moves + 4) << "splices retried without progress";
        if (!rig.close_notify_seen().empty()) {
            ASSERT_EQ(rig.to_client.size(), rig.from_backend.bytes.size()) << "close_notify before the last byte";
        }
        if (rig.backend_fin_seen()) {
            ASSERT_EQ(rig.to_backend.size(), rig.from_client.bytes.size()) << "FIN before the last byte";
        }
    }
    ASSERT_EQ(rig.host.failed, "");
    ASSERT_TRUE(rig.host.finished);
    EXPECT_TRUE(rig.to_backend == rig.from_client.bytes);
    EXPECT_TRUE(rig.to_client == rig.from_backend.bytes);
    EXPECT_EQ(rig.close_notify_seen(), std::string("\x01\x00", 2)) << "close_notify, once";
    EXPECT_TRUE(rig.backend_fin_seen());
    EXPECT_EQ(rig.host.inflight, 0);
    rig.host.relay.reset();
    EXPECT_EQ(rig.pipes.idle(), 2u) << "both pipes back in the pool, empty";
}

INSTANTIATE_TEST_SUITE_P(Orderings, RelayCoreSpliceProperty, ::testing::Range(0, 150));

}  // namespace
}  // namespace ztp::testing
