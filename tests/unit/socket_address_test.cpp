#include "proxy/base/socket_address.hpp"

#include <gtest/gtest.h>

namespace ztp {
namespace {

TEST(SocketAddress, ParsesV4V6AndWildcards) {
    EXPECT_EQ(SocketAddress::parse("127.0.0.1:443")->to_string(), "127.0.0.1:443");
    EXPECT_EQ(SocketAddress::parse("[::1]:8443")->to_string(), "[::1]:8443");
    EXPECT_EQ(SocketAddress::parse("*:80")->to_string(), "0.0.0.0:80");
    EXPECT_EQ(SocketAddress::parse("localhost:0")->to_string(), "127.0.0.1:0");
    EXPECT_EQ(SocketAddress::parse("[::]:1")->family(), AF_INET6);
}

TEST(SocketAddress, RejectsWithAReason) {
    std::string why;
    EXPECT_FALSE(SocketAddress::parse("1.2.3.4", &why));
    EXPECT_EQ(why, "expected host:port");
    EXPECT_FALSE(SocketAddress::parse("1.2.3.4:70000", &why));
    EXPECT_EQ(why, "port must be a number from 0 to 65535");
    EXPECT_FALSE(SocketAddress::parse("example.com:80", &why));
    EXPECT_EQ(why, "not an IP address (host names are not resolved)");
    EXPECT_FALSE(SocketAddress::parse("::1:80", &why));
    EXPECT_EQ(why, "IPv6 addresses must be written as [addr]:port");
    EXPECT_FALSE(SocketAddress::parse("[::1:80", &why));
    EXPECT_FALSE(SocketAddress::parse("[::1]80", &why));
    EXPECT_FALSE(SocketAddress::parse("1.2.3.4:", &why));
    EXPECT_FALSE(SocketAddress::parse("1.2.3.4:8x", &why));
}

}  // namespace
}  // namespace ztp
