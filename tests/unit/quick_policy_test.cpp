#include "proxy/app/quick_policy.hpp"

#include <gtest/gtest.h>

#include "config/policy_loader.hpp"

namespace ztp::app {
namespace {

// The flags quick mode cannot do without: one listener, one backend, a certificate and its key.
QuickOptions minimal_options() {
    QuickOptions o;
    o.listen = "127.0.0.1:0";
    o.backends = {"127.0.0.1:8080"};
    o.cert = "c.pem";
    o.key = "k.pem";
    return o;
}

TEST(QuickPolicy, BuildsAValidPolicy) {
    QuickOptions o = minimal_options();
    o.backends.push_back("[::1]:8081");
    o.alpn = {"h2", "http/1.1"};
    o.handshake_timeout = "3s";
    o.idle_timeout = "1m";
    o.min_version = "1.3";
    o.ktls = "require";
    o.allow = {"10.0.0.0/8", "192.168.0.0/16"};
    o.deny = {"10.1.2.3"};
    o.client_ca = "clients.pem";
    o.client_auth = "optional";
    o.proxy_protocol = "v2";
    o.user = "nobody";
    std::vector<std::string> problems;
    auto p = quick_policy(o, problems);
    EXPECT_TRUE(problems.empty());
    EXPECT_TRUE(config::validate_policy(p).empty());
    ASSERT_EQ(p.listeners.size(), 1u);
    EXPECT_EQ(p.backends[0].addresses.size(), 2u);
    EXPECT_EQ(p.limits.handshake_timeout, std::chrono::seconds(3));
    EXPECT_EQ(p.limits.idle_timeout, std::chrono::minutes(1));
    EXPECT_EQ(p.listeners[0].tls.min_version, config::TlsVersion::tls1_3);
    EXPECT_TRUE(p.routes[0].is_default);
    EXPECT_EQ(p.listeners[0].tls.ktls, config::KtlsMode::require);
    EXPECT_EQ(p.listeners[0].tls.certificates[0].cert_file.front(), '/');  // made absolute
    const auto& adm = p.listeners[0].admission;
    ASSERT_EQ(adm.allow.size(), 2u);
    EXPECT_EQ(adm.allow[1].to_string(), "192.168.0.0/16");
    ASSERT_EQ(adm.deny.size(), 1u);
    EXPECT_EQ(adm.deny[0].to_string(), "10.1.2.3/32");
    EXPECT_TRUE(adm.enabled());
    EXPECT_EQ(p.listeners[0].tls.client_auth, config::ClientAuth::optional);
    EXPECT_EQ(p.listeners[0].tls.client_ca.front(), '/');
    EXPECT_EQ(p.backends[0].proxy_protocol, config::ProxyProtocol::v2);
    EXPECT_EQ(p.process.user, "nobody");
}

TEST(QuickPolicy, NamesTheBadFlag) {
    QuickOptions o;
    o.listen = "nowhere";
    o.backends = {"127.0.0.1:99999"};
    o.cert = "c";
    o.key = "k";
    o.idle_timeout = "soon";
    o.max_version = "1.1";
    o.deny = {"10.0.0.0/33"};
    o.client_auth = "optional";  // without --client-ca
    std::vector<std::string> problems;
    quick_policy(o, problems);
    ASSERT_EQ(problems.size(), 6u);
    EXPECT_EQ(problems[0], "--listen 'nowhere': expected host:port");
    EXPECT_EQ(problems[1], "--tls-max must be 1.2 or 1.3");
    EXPECT_EQ(problems[2], "--client-auth needs --client-ca");
    EXPECT_EQ(problems[3].rfind("--deny '10.0.0.0/33': ", 0), 0u);
    EXPECT_EQ(problems[4], "--backend '127.0.0.1:99999': port must be a number from 0 to 65535");
    EXPECT_EQ(problems[5].rfind("--idle-timeout 'soon': ", 0), 0u);
}

TEST(QuickPolicy, Tls13Tickets) {
    QuickOptions o = minimal_options();
    std::vector<std::string> problems;
    EXPECT_EQ(quick_policy(o, problems).listeners[0].tls.tls13_tickets, 1u);  // the default
    for (int n : {0, 2, 8}) {
        o.tls13_tickets = n;
        auto p = quick_policy(o, problems);
        EXPECT_TRUE(problems.empty());
        EXPECT_EQ(p.listeners[0].tls.tls13_tickets, static_cast<unsigned>(n));
    }
    o.tls13_tickets = 9;
    quick_policy(o, problems);
    EXPECT_EQ(problems, std::vector<std::string>{"--tls13-tickets must be between 0 and 8"});
}

TEST(QuickPolicy, RedactOnPause) {
    QuickOptions o = minimal_options();
    o.redact_request = {"[0-9]{13,16}"};
    std::vector<std::string> problems;
    EXPECT_EQ(quick_policy(o, problems).routes[0].on_pause, config::OnPause::mask);  // the default
    o.redact_on_pause = "hold";
    EXPECT_EQ(quick_policy(o, problems).routes[0].on_pause, config::OnPause::hold);
    EXPECT_TRUE(problems.empty());
    o.redact_on_pause = "drop";
    quick_policy(o, problems);
    EXPECT_EQ(problems, (std::vector<std::string>{"--redact-on-pause must be mask, hold or release"}));
}

}  // namespace
}  // namespace ztp::app
