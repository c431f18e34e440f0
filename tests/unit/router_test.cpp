#include "proxy/conn/router.hpp"

#include <gtest/gtest.h>

namespace ztp::conn {
namespace {

config::Route route(std::string listener, std::vector<std::string> names, std::string backend, bool def = false) {
    config::Route r;
    r.listener = std::move(listener);
    r.server_names = std::move(names);
    r.backend = std::move(backend);
    r.is_default = def;
    return r;
}

TEST(Router, ExactBeatsWildcardBeatsDefault) {
    config::Policy p;
    p.routes = {route("", {"*.example.com"}, "wild"), route("", {"api.example.com"}, "exact"),
                route("", {}, "fallback", true)};
    Router r(p, "l");
    EXPECT_EQ(r.route("api.example.com")->backend, "exact");
    EXPECT_EQ(r.route("api.example.com")->route_index, 1u);
    EXPECT_EQ(r.route("www.example.com")->route_index, 0u);
    EXPECT_EQ(r.route("www.example.com")->backend, "wild");
    EXPECT_EQ(r.route("a.b.example.com")->backend, "fallback");  // a wildcard covers exactly one label
    EXPECT_EQ(r.route("example.com")->backend, "fallback");
    EXPECT_EQ(r.route("")->backend, "fallback");
}

TEST(Router, RoutesAreScopedToTheirListener) {
    config::Policy p;
    p.routes = {route("a", {"x.test"}, "for-a"), route("b", {"x.test"}, "for-b"), route("", {}, "all", true),
                route("b", {}, "b-default", true)};
    Router a(p, "a"), b(p, "b");
    EXPECT_EQ(a.route("x.test")->backend, "for-a");
    EXPECT_EQ(b.route("x.test")->backend, "for-b");
    EXPECT_EQ(a.route("y.test")->backend, "all");
    EXPECT_EQ(b.route("y.test")->backend, "b-default");  // a listener's own default beats the global one
}

TEST(Router, NoDefaultMeansUnroutedNamesAreRefused) {
    config::Policy p;
    p.routes = {route("", {"x.test"}, "app")};
    Router r(p, "l");
    EXPECT_NE(r.route("x.test"), nullptr);
    EXPECT_EQ(r.route("y.test"), nullptr);
    EXPECT_EQ(r.route(""), nullptr);
}

TEST(ServerNameMatches, WildcardRules) {
    EXPECT_TRUE(config::server_name_matches("*.a.test", "b.a.test"));
    EXPECT_FALSE(config::server_name_matches("*.a.test", "a.test"));
    EXPECT_FALSE(config::server_name_matches("*.a.test", "c.b.a.test"));
    EXPECT_FALSE(config::server_name_matches("*.a.test", ".a.test"));
    EXPECT_TRUE(config::server_name_matches("a.test", "a.test"));
    EXPECT_FALSE(config::server_name_matches("a.test", "b.test"));
}

}  // namespace
}  // namespace ztp::conn
