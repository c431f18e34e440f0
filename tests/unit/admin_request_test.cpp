#include "proxy/app/admin_request.hpp"

#include "proxy/app/admin_auth.hpp"

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

TEST(AdminRequest, ReadsTheAuthorizationHeaderWhateverItsCase) {
    auto r = parse_admin_request("POST /reload HTTP/1.1\r\nHost: a\r\nauthorization:  Bearer abc  \r\n\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->authorization, "Bearer abc");
    r = parse_admin_request("GET /metrics HTTP/1.1\r\nX-Authorization: Bearer abc\r\n\r\n");
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->authorization);
}

TEST(AdminRequest, RefusesTwoAuthorizationHeaders) {
    EXPECT_FALSE(parse_admin_request("POST /reload HTTP/1.1\r\nAuthorization: Bearer a\r\n"
                                     "AUTHORIZATION: Bearer b\r\n\r\n"));
}

TEST(BearerToken, TakesOnlyTheBearerScheme) {
    EXPECT_EQ(bearer_token("Bearer abc"), "abc");
    EXPECT_EQ(bearer_token("bEaReR   abc"), "abc");
    for (const char* bad : {"", "Bearer", "Bearer ", "Bearerabc", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Token abc"})
        EXPECT_FALSE(bearer_token(bad)) << bad;
}

TEST(AdminToken, AcceptsOnlyTheExactToken) {
    const AdminToken token("0123456789abcdef0123");
    EXPECT_TRUE(token.required());
    EXPECT_TRUE(token.accepts(std::string("Bearer 0123456789abcdef0123")));
    EXPECT_TRUE(token.accepts(std::string("bearer 0123456789abcdef0123")));
    for (std::string bad : {"Bearer 0123456789abcdef012", "Bearer 0123456789abcdef01234", "Bearer 0123456789ABCDEF0123",
                            "Basic 0123456789abcdef0123", "0123456789abcdef0123", "Bearer "})
        EXPECT_FALSE(token.accepts(bad)) << bad;
    EXPECT_FALSE(token.accepts(std::nullopt));
}

TEST(AdminToken, WithoutATokenEverythingPasses) {
    const AdminToken none;
    EXPECT_FALSE(none.required());
    EXPECT_TRUE(none.accepts(std::nullopt));
    EXPECT_TRUE(none.accepts(std::string("Bearer anything")));
}

}  // namespace
}  // namespace ztp::app
