// Redaction rules from the policy file to compiled databases: loader fields, validation in code
// (quick mode), one database per distinct rule list, the `check` description, scratch per worker.
#include <gtest/gtest.h>

#include "config/policy_loader.hpp"
#include "proxy/redact/rule_set.hpp"
#include "proxy/redact/rewriter.hpp"

namespace ztp::redact {
namespace {

const char* kPolicy = R"(
[[listener]]
name = "public"
address = "127.0.0.1:1"
tls.certificate = [{ name = "c", cert = "c.pem", key = "c.key" }]
[[backend]]
name = "b"
address = "127.0.0.1:2"
[[route]]
default = true
backend = "b"
rules = ["card", "bearer"]
allow_length_change = true
[[route]]
listener = "public"
server_names = ["a.test", "b.test"]
backend = "b"
rules = ["card", "bearer"]
allow_length_change = true
on_pause = "hold"
pause = "250ms"
[[route]]
server_names = ["plain.test"]
backend = "b"
[[rule]]
id = "card"
direction = "request"
pattern = '\b(?:\d[ -]?){13,16}\b'
[[rule]]
id = "bearer"
literal = "Bearer "
case_insensitive = true
replacement = "[B]"
)";

TEST(RedactRules, LoaderReadsEveryField) {
    auto outcome = config::load_policy_text(kPolicy, "r.toml");
    ASSERT_TRUE(outcome.policy) << outcome.problems.front().str();
    const config::Policy& p = *outcome.policy;
    ASSERT_EQ(p.rules.size(), 2u);
    EXPECT_EQ(p.rules[0].id, "card");
    EXPECT_EQ(p.rules[0].direction, config::RuleDirection::request);
    EXPECT_FALSE(p.rules[0].literal);
    EXPECT_EQ(p.rules[0].mask, '*');
    EXPECT_EQ(p.rules[0].pattern_loc.str(), "r.toml:28:11");
    EXPECT_EQ(p.rules[1].direction, config::RuleDirection::both);
    EXPECT_TRUE(p.rules[1].literal);
    EXPECT_TRUE(p.rules[1].case_insensitive);
    EXPECT_EQ(p.rules[1].replacement, std::optional<std::string>("[B]"));
    EXPECT_EQ(p.routes[0].rules, (std::vector<std::string>{"card", "bearer"}));
    EXPECT_EQ(p.routes[0].rule_locs.size(), 2u);
    EXPECT_TRUE(p.routes[0].allow_length_change);
    EXPECT_TRUE(p.routes[2].rules.empty());
    EXPECT_EQ(p.routes[0].on_pause, config::OnPause::mask);  // the defaults
    EXPECT_EQ(p.routes[0].pause, std::chrono::milliseconds(20));
    EXPECT_EQ(p.routes[1].on_pause, config::OnPause::hold);
    EXPECT_EQ(p.routes[1].pause, std::chrono::milliseconds(250));
    std::string why;
    auto set = RuleSet::compile(p, &why);
    ASSERT_TRUE(set) << why;
    EXPECT_EQ((*set)->route(1).on_pause, config::OnPause::hold);
    EXPECT_EQ((*set)->route(1).pause, std::chrono::milliseconds(250));
}

TEST(RedactRules, PauseKeysAreChecked) {
    auto problems = [](const std::string& route_keys) {
        auto outcome = config::load_policy_text(R"(
[[listener]]
name = "public"
address = "127.0.0.1:1"
tls.certificate = [{ name = "c", cert = "c.pem", key = "c.key" }]
[[backend]]
name = "b"
address = "127.0.0.1:2"
[[rule]]
id = "card"
pattern = '[0-9]{13,16}'
[[route]]
default = true
backend = "b"
rules = ["card"]
)" + route_keys,
                                                "p.toml");
        std::vector<std::string> out;
        for (const auto& d : outcome.problems) out.push_back(d.str());
        return out;
    };
    EXPECT_EQ(problems("on_pause = \"drop\"\n"),
              (std::vector<std::string>{"p.toml:16:12: 'on_pause' must be \"mask\", \"hold\" or \"release\""}));
    EXPECT_EQ(problems("pause = \"2m\"\n"),
              (std::vector<std::string>{"p.toml:16:9: 'pause' must be between 1ms and 60s"}));
    EXPECT_EQ(problems("pause = \"soon\"\n").size(), 1u);
    EXPECT_EQ(problems("pause = 20\n").size(), 1u);
    EXPECT_TRUE(problems("on_pause = \"release\"\npause = \"1s\"\n").empty());
}

TEST(RedactRules, IdenticalRuleListsShareADatabase) {
    auto outcome = config::load_policy_text(kPolicy, "r.toml");
    ASSERT_TRUE(outcome.policy);
    std::string why;
    auto set = RuleSet::compile(*outcome.policy, &why);
    ASSERT_TRUE(set) << why;
    const auto& r0 = (*set)->route(0);
    const auto& r1 = (*set)->route(1);
    ASSERT_TRUE(r0.request && r0.response);
    EXPECT_EQ(r0.request, r1.request);
    EXPECT_EQ(r0.response, r1.response);
    EXPECT_NE(r0.request, r0.response);  // request: card + bearer; response: bearer only
    EXPECT_EQ(r0.request->rules().size(), 2u);
    EXPECT_EQ(r0.response->rules().size(), 1u);
    EXPECT_TRUE(r0.response->has_replace());
    EXPECT_FALSE((*set)->route(2).any());
    EXPECT_FALSE((*set)->route(99).any());
    EXPECT_EQ((*set)->distinct_databases(), 2u);
    // card: max_width 32 - 1 + 2 (trailing \b) = 33.
    EXPECT_EQ(r0.request->hold_back(), 33u);

    // One scratch per worker; a clone works the same.
    auto scratch = (*set)->make_scratch();
    ASSERT_TRUE(scratch);
    auto clone = scratch->clone();
    ASSERT_TRUE(clone);
    auto w = Rewriter::open(r0.request);
    ASSERT_TRUE(w);
    RewritePlan plan;
    ASSERT_TRUE(w->feed(SharedBytes::copy_of(std::string_view("bearer 4111111111111111 x")), *clone, plan));
    ASSERT_TRUE(w->finish(*clone, plan));
    EXPECT_EQ(plan.to_string(), "[B]*****************x");  // [ -]? takes the space
}

TEST(RedactRules, DescribeRoutesForCheck) {
    auto outcome = config::load_policy_text(kPolicy, "r.toml");
    ASSERT_TRUE(outcome.policy);
    EXPECT_EQ(describe_routes(*outcome.policy),
              (std::vector<std::string>{
                  "route 'default' (every listener): rules card (request), bearer (both) → rewrite relay, no "
                  "splice; length may change; on pause (20ms): mask",
                  "route 'a.test, b.test' (listener 'public'): rules card (request), bearer (both) → rewrite "
                  "relay, no splice; length may change; on pause (250ms): hold",
              }));
}

config::Policy quick_policy_with(std::vector<config::RedactRule> rules) {
    auto outcome = config::load_policy_text(R"(
[[listener]]
name = "quick"
address = "127.0.0.1:1"
tls.certificate = [{ name = "c", cert = "c.pem", key = "c.key" }]
[[backend]]
name = "b"
address = "127.0.0.1:2"
[[route]]
default = true
backend = "b"
)",
                                            "<quick>");
    config::Policy p = *outcome.policy;
    p.source = "<quick>";
    for (auto& r : rules) {
        p.routes[0].rules.push_back(r.id);
        p.rules.push_back(std::move(r));
    }
    return p;
}

TEST(RedactRules, QuickModeRulesAreValidatedLikeAFile) {
    auto ok = quick_policy_with(quick_rules({"tok_[a-z]{8}", "secret"}, {"internal\\.corp"}));
    EXPECT_TRUE(config::validate_policy(ok).empty());
    EXPECT_EQ(ok.rules[0].id, "request-1");
    EXPECT_EQ(ok.rules[2].id, "response-1");
    EXPECT_EQ(ok.rules[2].direction, config::RuleDirection::response);

    auto bad = quick_policy_with(quick_rules({"a+", "(", "x?"}, {}));
    std::vector<std::string> msgs;
    for (auto& d : config::validate_policy(bad)) msgs.push_back(d.str());
    EXPECT_EQ(msgs, (std::vector<std::string>{
                        "<builtin>: rule 'request-1': pattern can match unbounded input; bound it (e.g. {1,64})",
                        "<builtin>: rule 'request-2': bad pattern: Missing close parenthesis for group started "
                        "at index 0",
                        "<builtin>: rule 'request-3': pattern can match the empty string",
                    }));
}

TEST(RedactRules, WidthLimitAndLengthChangeInCode) {
    auto p = quick_policy_with({});
    config::RedactRule wide;
    wide.id = "wide";
    wide.pattern = "[a-z]{1,5000}";
    config::RedactRule rep;
    rep.id = "rep";
    rep.pattern = "[0-9]{2,3}";
    rep.replacement = "NN";
    p.rules = {wide, rep};
    p.routes[0].rules = {"wide", "rep", "nope"};
    std::vector<std::string> msgs;
    for (auto& d : config::validate_policy(p)) msgs.push_back(d.message);
    EXPECT_EQ(msgs, (std::vector<std::string>{
                        "rule 'wide': pattern can match up to 5000 bytes; at most 4096 are allowed (the "
                        "rewriter holds back that much plaintext)",
                        "rule 'rep' has a replacement whose length differs from its matches; set "
                        "allow_length_change = true on this route",
                        "route references unknown rule 'nope'",
                    }));
}

}  // namespace
}  // namespace ztp::redact
