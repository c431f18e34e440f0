// Admission across a real device: two network namespaces made by the test (server and client),
// joined by a veth pair; the client namespace holds an allowed and a denied address. Unlike the
// loopback tests the SYNs here cross a driver (veth) and the IP layer's receive path. Skipped with
// the reason where `ip netns` or veth is not permitted; the namespaces are always deleted.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <gtest/gtest.h>

#include "bpf/admission.hpp"
#include "tests/bpf/bpf_test_util.hpp"

namespace ztp::bpf {
namespace {

using bpf_test::accept_within;
using bpf_test::connect_from;
using bpf_test::listen_on;

int sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

// Runs the calling thread in a named namespace until destroyed (sockets made meanwhile stay there).
class InNetns {
public:
    explicit InNetns(const std::string& name) : self_(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {
        UniqueFd target(::open(("/var/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC));
        ok_ = self_ && target && ::setns(target.get(), CLONE_NEWNET) == 0;
    }
    ~InNetns() {
        if (ok_) ::setns(self_.get(), CLONE_NEWNET);
    }
    bool ok() const { return ok_; }

private:
    UniqueFd self_;
    bool ok_ = false;
};

class AdmissionNetns : public testing::Test {
protected:
    void SetUp() override {
        const std::string id = std::to_string(::getpid() % 100000);
        srv_ = "ztp-bpf-srv-" + id;
        cli_ = "ztp-bpf-cli-" + id;
        const std::string vs = "ztpvs" + id, vc = "ztpvc" + id;
        if (sh("ip netns add " + srv_) != 0) GTEST_SKIP() << "`ip netns add` not permitted or ip missing";
        created_ = true;
        if (sh("ip netns add " + cli_) != 0) GTEST_SKIP() << "`ip netns add` failed for a second namespace";
        if (sh("ip -n " + srv_ + " link add " + vs + " type veth peer name " + vc + " netns " + cli_) != 0)
            GTEST_SKIP() << "cannot create a veth pair (no veth driver?)";
        const char* setup[] = {
            "ip -n SRV link set lo up",
            "ip -n CLI link set lo up",
            "ip -n SRV addr add 10.231.0.1/24 dev VS",
            "ip -n CLI addr add 10.231.0.2/24 dev VC",
            "ip -n CLI addr add 10.231.0.3/24 dev VC",
            "ip -n SRV link set VS up",
            "ip -n CLI link set VC up",
        };
        for (std::string c : setup) {
            for (auto [from, to] : {std::pair{"SRV", srv_}, {"CLI", cli_}, {"VS", vs}, {"VC", vc}})
                for (size_t p; (p = c.find(from)) != std::string::npos;) c.replace(p, std::strlen(from), to);
            ASSERT_EQ(sh(c), 0) << c;
        }
    }
    void TearDown() override {
        if (created_) {
            sh("ip netns del " + srv_);
            sh("ip netns del " + cli_);  // deleting a namespace deletes its end of the veth pair
        }
    }

    std::string srv_, cli_;
    bool created_ = false;
};

TEST_F(AdmissionNetns, DeniedAddressNeverConnectsAllowedOneDoes) {
    AdmissionPolicy p;
    p.allow = {*Cidr::parse("10.231.0.0/24")};
    p.deny = {*Cidr::parse("10.231.0.3/32")};
    auto a = Admission::load(p);
    ASSERT_TRUE(a.ok()) << a.error().message();

    bpf_test::TestListener l;
    {
        InNetns in(srv_);
        ASSERT_TRUE(in.ok());
        l = listen_on("10.231.0.1:0", false, [&](int fd) { ASSERT_TRUE(a.value()->attach(fd).ok()); });
    }
    ASSERT_TRUE(l.fd);
    {
        InNetns in(cli_);
        ASSERT_TRUE(in.ok());
        // The first connect also resolves the neighbour (ARP) over the veth: allow a few seconds.
        auto good = connect_from("10.231.0.2", l.addr, 5000);
        EXPECT_EQ(good.error, 0) << std::strerror(good.error);
        auto bad = connect_from("10.231.0.3", l.addr);
        EXPECT_EQ(bad.error, ETIMEDOUT) << std::strerror(bad.error);
    }
    SocketAddress peer;
    ASSERT_TRUE(accept_within(l.fd.get(), 2000, &peer));
    EXPECT_EQ(peer.ip_string(), "10.231.0.2");
    EXPECT_FALSE(accept_within(l.fd.get(), 0));
    auto c = a.value()->counters();
    EXPECT_EQ(c.admitted, 1u);
    EXPECT_GE(c.denied, 1u);
    EXPECT_EQ(c.per_deny_rule, (std::vector<uint64_t>{c.denied}));
}

}  // namespace
}  // namespace ztp::bpf
