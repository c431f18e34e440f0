#include "bpf/cidr.hpp"

#include <gtest/gtest.h>

namespace ztp::bpf {
namespace {

SocketAddress addr(const char* s) { return *SocketAddress::parse(s); }

TEST(Cidr, ParsesNetworks) {
    auto c = Cidr::parse("10.0.0.0/8");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->family, AF_INET);
    EXPECT_EQ(c->prefix, 8u);
    EXPECT_EQ(c->mapped_prefix(), 104u);
    EXPECT_EQ(c->to_string(), "10.0.0.0/8");
    EXPECT_EQ(Cidr::parse("2001:DB8::/32")->to_string(), "2001:db8::/32");
    EXPECT_EQ(Cidr::parse("::1/128")->to_string(), "::1/128");
    EXPECT_EQ(Cidr::parse("0.0.0.0/0")->to_string(), "0.0.0.0/0");
    EXPECT_EQ(Cidr::parse("192.0.2.7")->to_string(), "192.0.2.7/32");  // a host
    EXPECT_EQ(Cidr::parse("fe80::1")->to_string(), "fe80::1/128");
}

TEST(Cidr, ExplainsErrors) {
    std::string why;
    EXPECT_FALSE(Cidr::parse("10.0.0.1/8", &why));
    EXPECT_EQ(why, "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?");
    EXPECT_FALSE(Cidr::parse("2001:db8::1/32", &why));
    EXPECT_EQ(why, "'2001:db8::1/32' has host bits set; did you mean 2001:db8::/32?");
    EXPECT_FALSE(Cidr::parse("10.0.0.0/33", &why));
    EXPECT_EQ(why, "'10.0.0.0/33': prefix length 33 is out of range for IPv4 (0..32)");
    EXPECT_FALSE(Cidr::parse("::/129", &why));
    EXPECT_EQ(why, "'::/129': prefix length 129 is out of range for IPv6 (0..128)");
    EXPECT_FALSE(Cidr::parse("10.0.0.0/", &why));
    EXPECT_EQ(why, "'10.0.0.0/': expected a prefix length (0..128) after '/'");
    EXPECT_FALSE(Cidr::parse("10.0.0.0/-1", &why));
    EXPECT_FALSE(Cidr::parse("10.0.0.0/8/8", &why));
    EXPECT_FALSE(Cidr::parse("example.com/8", &why));
    EXPECT_EQ(why, "'example.com' is not an IPv4 or IPv6 address");
    EXPECT_FALSE(Cidr::parse("10.0/8", &why));
    EXPECT_FALSE(Cidr::parse("", &why));
    EXPECT_FALSE(Cidr::parse("10.0.0.0 /8", &why));
}

TEST(Cidr, Contains) {
    auto c = *Cidr::parse("10.1.0.0/16");
    EXPECT_TRUE(c.contains(addr("10.1.2.3:1")));
    EXPECT_FALSE(c.contains(addr("10.2.0.1:1")));
    EXPECT_TRUE(c.contains(addr("[::ffff:10.1.9.9]:1")));  // a dual-stack listener's IPv4 peer
    auto v6 = *Cidr::parse("2001:db8::/32");
    EXPECT_TRUE(v6.contains(addr("[2001:db8:1::1]:1")));
    EXPECT_FALSE(v6.contains(addr("10.1.2.3:1")));
    EXPECT_TRUE(Cidr::parse("0.0.0.0/0")->contains(addr("1.2.3.4:1")));
    EXPECT_FALSE(Cidr::parse("0.0.0.0/0")->contains(addr("[2001:db8::1]:1")));  // all IPv4 only
    EXPECT_TRUE(Cidr::parse("::/0")->contains(addr("1.2.3.4:1")));             // everything
    EXPECT_TRUE(Cidr::parse("10.1.2.3")->contains(addr("10.1.2.3:5")));
    EXPECT_FALSE(Cidr::parse("10.1.2.3")->contains(addr("10.1.2.4:5")));
    EXPECT_TRUE(Cidr::parse("10.1.2.0/23")->contains(addr("10.1.3.255:5")));
    EXPECT_FALSE(Cidr::parse("10.1.2.0/23")->contains(addr("10.1.4.0:5")));
}

}  // namespace
}  // namespace ztp::bpf
