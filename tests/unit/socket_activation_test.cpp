// Which inherited socket serves which listener: by name, else by address; every socket claimed.
#include <gtest/gtest.h>

#include "proxy/app/socket_activation.hpp"

namespace ztp::app {
namespace {

config::Listener listener(const char* name, const char* address) {
    config::Listener l;
    l.name = name;
    l.address = *SocketAddress::parse(address);
    return l;
}

InheritedSocket inherited(const char* name, const char* address) {
    InheritedSocket s;
    s.name = name;
    s.address = *SocketAddress::parse(address);
    return s;
}

const std::vector<config::Listener> kListeners = {listener("public", "0.0.0.0:443"),
                                                   listener("internal", "127.0.0.1:8443"),
                                                   listener("v6", "[::]:443")};

TEST(SocketActivation, MatchesByNameThenByAddress) {
    std::vector<InheritedSocket> sockets;
    sockets.push_back(inherited("unknown", "[::]:443"));
    sockets.push_back(inherited("internal", "127.0.0.1:8443"));
    std::vector<std::string> problems;
    auto assigned = assign_inherited_sockets(kListeners, sockets, problems);
    EXPECT_EQ(problems, std::vector<std::string>{});
    ASSERT_EQ(assigned.size(), 3u);
    EXPECT_FALSE(assigned[0]);  // binds its own
    EXPECT_EQ(assigned[1], 1u);
    EXPECT_EQ(assigned[2], 0u);
}

TEST(SocketActivation, NoSocketsNoAssignments) {
    std::vector<std::string> problems;
    auto assigned = assign_inherited_sockets(kListeners, {}, problems);
    EXPECT_TRUE(problems.empty());
    EXPECT_EQ(assigned, std::vector<std::optional<size_t>>(3));
}

TEST(SocketActivation, ASocketNoListenerClaimsIsAnError) {
    std::vector<InheritedSocket> sockets;
    sockets.push_back(inherited("ztproxy", "0.0.0.0:9443"));
    std::vector<std::string> problems;
    assign_inherited_sockets(kListeners, sockets, problems);
    EXPECT_EQ(problems, std::vector<std::string>{
                            "inherited socket fd -1 ('ztproxy', bound to 0.0.0.0:9443) matches no [[listener]] by "
                            "name or address (listeners: 'public' 0.0.0.0:443, 'internal' 127.0.0.1:8443, 'v6' "
                            "[::]:443)"});
}

TEST(SocketActivation, ANameWhoseAddressDisagreesIsAnError) {
    std::vector<InheritedSocket> sockets;
    sockets.push_back(inherited("public", "0.0.0.0:8443"));
    std::vector<std::string> problems;
    auto assigned = assign_inherited_sockets(kListeners, sockets, problems);
    EXPECT_EQ(problems, std::vector<std::string>{"inherited socket fd -1 ('public', bound to 0.0.0.0:8443) is named "
                                                 "like listener 'public', whose address is 0.0.0.0:443"});
    EXPECT_FALSE(assigned[0]);
}

TEST(SocketActivation, TwoSocketsForOneListenerIsAnError) {
    std::vector<InheritedSocket> sockets;
    sockets.push_back(inherited("public", "0.0.0.0:443"));
    sockets.push_back(inherited("unknown", "0.0.0.0:443"));
    std::vector<std::string> problems;
    assign_inherited_sockets(kListeners, sockets, problems);
    EXPECT_EQ(problems, std::vector<std::string>{"inherited socket fd -1 ('unknown', bound to 0.0.0.0:443): listener "
                                                 "'public' already has inherited socket fd -1"});
}

}  // namespace
}  // namespace ztp::app
