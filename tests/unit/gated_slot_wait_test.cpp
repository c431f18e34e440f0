// Waiting for a gated slot (proxy/io/slot_waiters.hpp, GatedPool::acquire(SlotWait&)): when every
// slot of a worker is busy, clients wait in line; each slot that comes back is promised to the
// oldest waiter, who is woken at the worker's safe point (wake_waiters), never from inside the
// release. First the queue on a pool of its own, then the userspace relay on the fake completion
// queue (fake_ring.hpp), several connections sharing one worker's pools.
#include <gtest/gtest.h>
#include <poll.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "crypto/record_layer.hpp"
#include "fake_ring.hpp"
#include "proxy/conn/userspace_relay.hpp"
#include "proxy/io/gated_pool.hpp"

namespace ztp::testing {
namespace {

// ---- the queue

// A party that waits for a slot of `pool` and, when woken, takes it (unless told not to).
struct Waiter {
    Waiter(io::GatedPool& p, std::vector<std::string>& l, std::string n) : pool(p), log(l), name(std::move(n)) {}
    io::GatedPool& pool;
    std::vector<std::string>& log;  // who was woken, in order
    std::string name;
    bool takes_it = true;
    io::GatedBuffer slot;
    io::SlotWait wait{[this] { woken(); }};

    void woken() {
        log.push_back(name);
        if (takes_it) try_acquire();
    }
    bool try_acquire() {
        auto b = pool.acquire(wait);
        if (b) slot = std::move(b).value();
        return slot.valid();
    }
};

class SlotWaitQueue : public ::testing::Test {
protected:
    // Every slot taken by somebody who does not wait.
    void SetUp() override {
        for (size_t i = 0; i < pool->slots(); ++i) busy.push_back(pool->acquire().value());
    }
    Waiter& waiter(const std::string& name) {
        waiters.push_back(std::make_unique<Waiter>(*pool, woken, name));
        EXPECT_FALSE(waiters.back()->try_acquire()) << name << " got a slot: none is free";
        return *waiters.back();
    }

    std::unique_ptr<io::GatedPool> pool = io::GatedPool::create(4096, 3).value();
    std::deque<io::GatedBuffer> busy;
    std::vector<std::string> woken;
    std::vector<std::unique_ptr<Waiter>> waiters;  // declared after the pool: destroyed before it
};

TEST_F(SlotWaitQueue, WaitersAreWokenOldestFirstAtTheSafePointNeverInsideTheRelease) {
    Waiter& a = waiter("a");
    Waiter& b = waiter("b");
    Waiter& c = waiter("c");
    EXPECT_EQ(pool->waiting(), 3u);

    busy.pop_front();  // a slot comes back, from inside its owner's code
    EXPECT_EQ(woken, std::vector<std::string>{}) << "a waiter ran inside somebody else's release";
    EXPECT_EQ(pool->promised(), 1u);
    EXPECT_FALSE(pool->acquire()) << "a newcomer took the slot promised to the oldest waiter";

    EXPECT_EQ(pool->wake_waiters(), 1u);
    EXPECT_EQ(woken, std::vector<std::string>{"a"});
    EXPECT_TRUE(a.slot.valid());
    EXPECT_EQ(pool->promised(), 0u);

    a.slot.reset();  // the first to be served gives its slot back: the next in line gets it
    busy.pop_front();
    EXPECT_EQ(pool->wake_waiters(), 2u);
    EXPECT_EQ(woken, (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_TRUE(b.slot.valid() && c.slot.valid());
    EXPECT_EQ(pool->waiting(), 0u);
}

TEST_F(SlotWaitQueue, AsManyWaitersAreWokenAsSlotsCameBackEachOnce) {
    for (const char* n : {"a", "b", "c", "d", "e"}) waiter(n);
    busy.clear();  // three slots back at once
    EXPECT_EQ(pool->wake_waiters(), 3u);
    EXPECT_EQ(woken, (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(pool->wake_waiters(), 0u) << "woken twice for one slot";
    EXPECT_EQ(pool->waiting(), 2u);
    EXPECT_EQ(pool->slots_in_use(), 3u);
}

TEST_F(SlotWaitQueue, AWaiterThatWentAwayIsSkippedWhetherQueuedOrPromised) {
    waiter("a");
    waiter("b");
    waiter("c");
    waiter("d");
    waiters[1].reset();  // b's connection closed while it waited
    busy.pop_front();    // promised to a
    waiters[0].reset();  // a closed before it was woken: its promise goes to c
    EXPECT_EQ(pool->promised(), 1u);
    EXPECT_EQ(pool->wake_waiters(), 1u);
    EXPECT_EQ(woken, std::vector<std::string>{"c"});
    EXPECT_TRUE(waiters[2]->slot.valid());
    EXPECT_EQ(pool->waiting(), 1u) << "d waits on";
}

TEST_F(SlotWaitQueue, APromiseTheWokenWaiterLeavesPassesToTheNext) {
    Waiter& a = waiter("a");
    Waiter& b = waiter("b");
    a.takes_it = false;  // e.g. its connection is closing by now
    busy.pop_front();
    EXPECT_EQ(pool->wake_waiters(), 2u);
    EXPECT_EQ(woken, (std::vector<std::string>{"a", "b"}));
    EXPECT_FALSE(a.slot.valid());
    EXPECT_FALSE(a.wait.waiting());
    EXPECT_TRUE(b.slot.valid());
}

TEST_F(SlotWaitQueue, APromisedWaiterMayTakeItsSlotBeforeItIsWoken) {
    Waiter& a = waiter("a");
    busy.pop_front();
    EXPECT_TRUE(a.try_acquire()) << "the promised slot, claimed from the waiter's own code";
    EXPECT_EQ(pool->wake_waiters(), 0u);
    EXPECT_EQ(woken, std::vector<std::string>{});
}

// ---- the userspace relay, connections sharing a worker's pools

constexpr int kClientFd = 1 << 20;  // never real descriptors
constexpr int kBackendFd = (1 << 20) + 1;

crypto::DirectionKeys client_keys() {
    crypto::DirectionKeys k;
    EXPECT_TRUE(k.key.assign(std::vector<uint8_t>(16, 0x11)));
    EXPECT_TRUE(k.iv.assign(std::vector<uint8_t>(12, 0x22)));
    return k;
}
crypto::SecretBytes client_secret() {
    crypto::SecretBytes s;
    EXPECT_TRUE(s.assign(std::vector<uint8_t>(32, 0x33)));
    return s;
}

// One connection of the worker: its relay on a fake ring, the client's sealed records, what the
// backend received. Like Connection, it lets no completion reach a relay once it is closing.
class Conn final : public conn::RelayHost, public io::CompletionHandler {
public:
    explicit Conn(io::GatedPools pools) {
        ring.on_recv_now = [this](int fd, void* buf, size_t len) -> long {
            if (fd != kClientFd || wire.empty()) return -EAGAIN;
            const size_t n = std::min(len, wire.size());
            std::memcpy(buf, wire.data(), n);
            wire.erase(0, n);
            return static_cast<long>(n);
        };
        relay = std::make_unique<conn::UserspaceRelay>(
            *this, pools, crypto::RecordReader::create(client_keys(), client_secret()).value(),
            crypto::RecordWriter::create(client_keys(), client_secret()).value(), config::TlsVersion::tls1_3,
            kClientFd, kBackendFd, 64 * 1024, conn::RedactionStage{}, conn::RedactionStage{});
        relay->start();
    }

    void client_sends(const std::string& plain) {
        std::vector<uint8_t> buf(client.headroom() + plain.size() + client.tailroom());
        std::memcpy(buf.data() + client.headroom(), plain.data(), plain.size());
        auto n = client.seal_in_place(buf, plain.size(), crypto::ContentType::application_data);
        ASSERT_TRUE(n);
        wire.append(reinterpret_cast<const char*>(buf.data()), *n);
    }
    // The client's readiness fires (the relay reads what is there in the same turn, if it can).
    void client_readable() {
        const int i = ring.find(kClientFd, FakeRing::Kind::poll);
        ASSERT_GE(i, 0);
        ring.complete(static_cast<size_t>(i), POLLIN);
    }
    // Completes client receives and backend sends until neither is pending.
    void run() {
        for (int guard = 0; guard < 100; ++guard) {
            if (int i = ring.find(kClientFd, FakeRing::Kind::recv); i >= 0 && !wire.empty()) {
                const size_t n = std::min(wire.size(), ring.pending()[static_cast<size_t>(i)].len);
                const std::string bytes = wire.substr(0, n);
                wire.erase(0, n);
                ring.complete_recv(static_cast<size_t>(i), bytes);
            } else if (int s = ring.find(kBackendFd, FakeRing::Kind::send); s >= 0) {
                ring.complete_send(static_cast<size_t>(s), ring.pending()[static_cast<size_t>(s)].len, backend_got);
            } else {
                return;
            }
        }
    }
    bool reading_client() const {
        return ring.find(kClientFd, FakeRing::Kind::recv) >= 0 || ring.find(kClientFd, FakeRing::Kind::poll) >= 0;
    }

    FakeRing ring;
    io::BufferPool buffer_pool{conn::UserspaceRelay::kBatchRecords * crypto::kRecordMaxSize, 2};
    std::unique_ptr<conn::Relay> relay;
    crypto::RecordWriter client = crypto::RecordWriter::create(client_keys(), client_secret()).value();
    std::string wire;         // sealed records the proxy has not read yet
    std::string backend_got;  // plaintext that reached the backend
    std::string failed;
    bool closing = false;

    io::Submitter& loop() override { return ring; }
    io::CompletionHandler& completion_target() override { return *this; }
    io::BufferPool& buffers() override { return buffer_pool; }
    void op_submitted() override {}
    void activity() override {}
    void relay_finished(const char*) override { closing = true; }
    void relay_failed(const char* reason, const std::string& detail) override {
        failed = std::string(reason) + ": " + detail;
        closing = true;
    }
    void on_completion(uint8_t tag, int res, uint32_t) override {
        if (!closing) relay->on_completion(tag, res);
    }
};

TEST(GatedSlotWaitRelay, ClientsWaitingForASlotAreReadInTheOrderTheyBeganToWaitWithoutPolling) {
    // One worker's pools with one slot each, both busy elsewhere.
    auto bulk = io::GatedPool::create(256 * 1024, 1).value();
    auto burst = io::GatedPool::create(crypto::kRecordMaxSize, 1, io::GatedPool::Layout::isolated).value();
    io::GatedBuffer bulk_busy = bulk->acquire().value();
    io::GatedBuffer burst_busy = burst->acquire().value();
    const io::GatedPools pools{*bulk, *burst};
    auto safe_point = [&] { return bulk->wake_waiters() + burst->wake_waiters(); };

    std::vector<std::unique_ptr<Conn>> conns;
    const std::vector<std::string> names{"c0", "c1", "c2", "c3"};
    for (size_t i = 0; i < names.size(); ++i) conns.push_back(std::make_unique<Conn>(pools));
    // They begin to wait in this order: 2, 0, 3, 1.
    for (size_t i : {2, 0, 3, 1}) {
        conns[i]->client_sends("request of " + names[i]);
        conns[i]->client_readable();
        EXPECT_EQ(conns[i]->failed, "") << names[i] << ": a client waits, it is never closed";
        EXPECT_FALSE(conns[i]->reading_client()) << names[i] << " is read with no slot";
        EXPECT_EQ(conns[i]->ring.find(-1, FakeRing::Kind::timeout), -1) << names[i] << " polls for a slot";
    }
    EXPECT_EQ(bulk->waiting(), 4u);
    conns[3].reset();  // c3's connection closes while it waits: skipped, nothing dangles

    // One slot comes back: nothing runs inside the release; at the safe point exactly one client,
    // the oldest, is woken; once its batch left, the slot goes to the next one, and so on.
    std::vector<size_t> submitted;
    for (auto& c : conns)
        if (c) submitted.push_back(c->ring.submitted());
    burst_busy.reset();
    size_t k = 0;
    for (auto& c : conns) {
        if (c) {
            EXPECT_EQ(c->ring.submitted(), submitted[k++]) << "a relay ran inside another's release";
        }
    }
    std::string order;
    for (size_t i : {2, 0, 1}) {
        EXPECT_EQ(safe_point(), 1u) << "one slot back, one client woken";
        for (size_t j : {0, 1, 2}) {
            if (j != i) {
                EXPECT_EQ(conns[j]->ring.find(kClientFd, FakeRing::Kind::recv), -1) << names[j] << " out of turn";
            }
        }
        conns[i]->run();
        EXPECT_EQ(conns[i]->backend_got, "request of " + names[i]);
        if (!conns[i]->backend_got.empty()) order += names[i] + " ";
    }
    EXPECT_EQ(order, "c2 c0 c1 ");
    EXPECT_EQ(safe_point(), 0u);
    EXPECT_EQ(bulk->waiting() + burst->waiting(), 0u);
    for (auto& c : conns) {
        if (c) {
            EXPECT_EQ(c->ring.violations(), std::vector<std::string>{});
        }
    }
    conns.clear();
    bulk_busy.reset();
    EXPECT_EQ(bulk->slots_in_use() + burst->slots_in_use(), 0u);
}

}  // namespace
}  // namespace ztp::testing
