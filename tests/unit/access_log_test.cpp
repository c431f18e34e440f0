#include "proxy/conn/access_log.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace ztp::conn {
namespace {

AccessRecord sample() {
    AccessRecord r;
    r.client = "127.0.0.1:5000";
    r.listener = "public";
    r.worker = 1;
    r.sni = "a.test";
    r.version = "TLSv1.3";
    r.cipher = "TLS_AES_128_GCM_SHA256";
    r.backend = "127.0.0.1:8080";
    r.rx_path = "openssl";
    r.tx_path = "openssl";
    r.counters.bytes_up = 10;
    r.counters.bytes_down = 20;
    r.counters.copied_up = 10;
    r.counters.copied_down = 20;
    r.duration_ms = 3;
    r.close = "client_close";
    return r;
}

TEST(AccessLog, TextIsKeyValue) {
    auto line = format_access_text(sample());
    EXPECT_NE(line.find(" client=127.0.0.1:5000 "), std::string::npos);
    EXPECT_NE(line.find(" listener=public worker=1 sni=a.test "), std::string::npos) << line;
    EXPECT_NE(line.find(" alpn=\"\" "), std::string::npos);
    EXPECT_NE(line.find(" bytes_up=10 bytes_down=20 spliced_up=0 spliced_down=0 copied_up=10 copied_down=20 "),
              std::string::npos)
        << line;
    EXPECT_EQ(line.find("ktls_fallback"), std::string::npos) << "only present when kTLS was refused";
    EXPECT_EQ(line.find("client_subject"), std::string::npos) << "only present with a client certificate";
    EXPECT_EQ(line.find("client_cert_error"), std::string::npos) << "only present when one was refused";
    EXPECT_NE(line.find(" close=client_close"), std::string::npos);
}

TEST(AccessLog, PeerControlledValuesCannotForgeFields) {
    auto r = sample();
    r.sni = "evil close=fake\n\"x\\";
    auto line = format_access_text(r);
    EXPECT_EQ(line.find('\n'), std::string::npos);
    EXPECT_NE(line.find(R"(sni="evil close=fake\x0a\"x\\")"), std::string::npos) << line;
}

TEST(AccessLog, ClientCertificateFields) {
    auto r = sample();
    r.client_subject = "CN=alice,O=ztproxy tests";
    r.client_cert_error = "unable to get local issuer certificate";
    auto line = format_access_text(r);
    EXPECT_NE(line.find(R"( client_subject="CN=alice,O=ztproxy tests" )"), std::string::npos) << line;
    EXPECT_NE(line.find(R"( client_cert_error="unable to get local issuer certificate" )"), std::string::npos)
        << line;
    auto j = nlohmann::json::parse(format_access_json(r));
    EXPECT_EQ(j["client_subject"], "CN=alice,O=ztproxy tests");
    EXPECT_EQ(j["client_cert_error"], "unable to get local issuer certificate");
}

TEST(AccessLog, JsonHasTheSameFields) {
    auto j = nlohmann::json::parse(format_access_json(sample()));
    EXPECT_EQ(j["client"], "127.0.0.1:5000");
    EXPECT_EQ(j["bytes_down"], 20);
    EXPECT_EQ(j["worker"], 1);
    EXPECT_EQ(j["copied_up"], 10);
    EXPECT_EQ(j["spliced_down"], 0);
    EXPECT_EQ(j["rx_path"], "openssl");
    EXPECT_EQ(j["close"], "client_close");
    EXPECT_TRUE(j.contains("ts"));
}

}  // namespace
}  // namespace ztp::conn
