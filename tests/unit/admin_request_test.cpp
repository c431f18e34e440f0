#include "proxy/app/admin_request.hpp"

#include <gtest/gtest.h>

namespace ztp::app {
namespace {

TEST(AdminRequest, ReadsMethodAndPathWithoutTheQuery) {
    auto r = parse_admin_request("GET /metrics?name=x HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->method, "GET");
    EXPECT_EQ(r->path, "/metrics");
    r = parse_admin_request("POST /reload HTTP/1.0\r\n\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->method, "POST");
    EXPECT_EQ(r->path, "/reload");
}

TEST(AdminRequest, RefusesWhatIsNotARequestLine) {
    for (const char* bad : {"", "GET /metrics HTTP/1.1", "GET /metrics\r\n\r\n", "get /metrics HTTP/1.1\r\n\r\n",
                            "GET metrics HTTP/1.1\r\n\r\n", "GET  /metrics HTTP/1.1\r\n\r\n",
                            "GET /metrics HTTP/2\r\n\r\n", "GET /me trics HTTP/1.1\r\n\r\n",
                            "GET /metrics HTTP/1.1 extra\r\n\r\n", "GET /\x01 HTTP/1.1\r\n\r\n",
                            "GET /#frag HTTP/1.1\r\n\r\n", "VERYLONGMETHODNAMEX / HTTP/1.1\r\n\r\n"})
        EXPECT_FALSE(parse_admin_request(bad)) << bad;
    EXPECT_FALSE(parse_admin_request("GET /" + std::string(2000, 'a') + " HTTP/1.1\r\n\r\n"));
}

}  // namespace
}  // namespace ztp::app
