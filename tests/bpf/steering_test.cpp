// The steering program on a real SO_REUSEPORT group on loopback: a client's source address picks
// the worker socket (same address → same socket, every time; many addresses → every socket), as
// Steering::worker_for() predicts; an empty slot falls back to the kernel's choice.
#include <gtest/gtest.h>

#include <set>

#include "bpf/steering.hpp"
#include "tests/bpf/bpf_test_util.hpp"

namespace ztp::bpf {
namespace {

using bpf_test::accept_within;
using bpf_test::connect_from;
using bpf_test::listen_on;
using bpf_test::TestListener;

constexpr size_t kWorkers = 4;

struct Group {
    std::vector<TestListener> socks;
    std::vector<int> fds() const {
        std::vector<int> v;
        for (const auto& s : socks) v.push_back(s.fd.get());
        return v;
    }
};

Group make_group(size_t n) {
    Group g;
    g.socks.push_back(listen_on("127.0.0.1:0", true));
    if (!g.socks[0].fd) return {};
    const std::string where = g.socks[0].addr.to_string();
    for (size_t i = 1; i < n; ++i) {
        g.socks.push_back(listen_on(where, true));
        if (!g.socks.back().fd) return {};
    }
    return g;
}

// Connects from `src` and returns the index of the socket that got the connection (-1: none).
int landed_on(const Group& g, const std::string& src) {
    auto c = connect_from(src, g.socks[0].addr, 2000);
    if (c.error != 0) return -1;
    std::vector<pollfd> p;
    for (const auto& s : g.socks) p.push_back({s.fd.get(), POLLIN, 0});
    if (::poll(p.data(), p.size(), 2000) <= 0) return -1;
    int found = -1;
    for (size_t i = 0; i < p.size(); ++i) {
        if (!(p[i].revents & POLLIN)) continue;
        SocketAddress peer;
        if (accept_within(p[i].fd, 0, &peer) && peer.ip_string() == src) found = static_cast<int>(i);
    }
    return found;
}

TEST(Steering, SourceAddressPicksTheWorker) {
    Group g = make_group(kWorkers);
    ASSERT_EQ(g.socks.size(), kWorkers);
    auto st = Steering::load(kWorkers, 0x5eed);
    ASSERT_TRUE(st.ok()) << st.error().message();
    ASSERT_TRUE(st.value()->attach(g.fds()).ok());

    std::set<int> used;
    for (int x = 1; x <= 40; ++x) {
        const std::string src = "127.0.0." + std::to_string(x);
        const size_t expected = st.value()->worker_for(*SocketAddress::parse(src + ":0"));
        const int first = landed_on(g, src);
        ASSERT_GE(first, 0) << src;
        EXPECT_EQ(static_cast<size_t>(first), expected) << src;
        // Another connection (another source port) from the same address: same worker.
        EXPECT_EQ(landed_on(g, src), first) << src;
        used.insert(first);
    }
    EXPECT_EQ(used.size(), kWorkers);  // with this seed and 40 addresses, every worker gets some
}

TEST(Steering, EmptySlotFallsBackToTheKernel) {
    Group g = make_group(kWorkers);
    ASSERT_EQ(g.socks.size(), kWorkers);
    auto st = Steering::load(kWorkers, 0x5eed);
    ASSERT_TRUE(st.ok()) << st.error().message();
    ASSERT_TRUE(st.value()->attach(g.fds()).ok());

    // Find an address steered to worker 2, then close worker 2: the kernel empties its slot.
    std::string src;
    for (int x = 1; x < 255 && src.empty(); ++x) {
        std::string s = "127.0.1." + std::to_string(x);
        if (st.value()->worker_for(*SocketAddress::parse(s + ":0")) == 2) src = s;
    }
    ASSERT_FALSE(src.empty());
    g.socks[2].fd.reset();
    g.socks[2].fd = UniqueFd(::socket(AF_INET, SOCK_STREAM, 0));  // keep indexes; never polled ready
    const int got = landed_on(g, src);
    EXPECT_GE(got, 0);
    EXPECT_NE(got, 2);
}

TEST(Steering, RejectsWrongSocketCount) {
    auto st = Steering::load(2, 1);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st.value()->attach({}).error().code, EINVAL);
    EXPECT_FALSE(Steering::load(0).ok());
}

TEST(Steering, RefusesANonListeningSocket) {
    auto st = Steering::load(1, 1);
    ASSERT_TRUE(st.ok());
    UniqueFd s(::socket(AF_INET, SOCK_STREAM, 0));
    EXPECT_FALSE(st.value()->set_worker(0, s.get()).ok());
}

}  // namespace
}  // namespace ztp::bpf
