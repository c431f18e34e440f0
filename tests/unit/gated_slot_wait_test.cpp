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

#include "proxy/io/gated_pool.hpp"
#include "userspace_conn.hpp"

namespace ztp::testing {
namespace {

using userspace::Conn;
using userspace::kBackendFd;
using userspace::kClientFd;

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

// ---- the userspace relay, connections sharing a worker's pools (userspace_conn.hpp)

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
