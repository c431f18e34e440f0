// Rule routes on the userspace path: small verified batches (GatedSource::kCopyBelow) are copied
// out of their gated slot into the direction's small buffer (UserspaceRelay::kSmallBuffer), so a
// slow typist whose keystrokes the redaction stage holds back pins no gated slot. The buffer rolls
// over when its tail is too short for a read; a match held open at that moment still references
// the old buffer, and the keystrokes after it must not stay in their slots either.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "redact_test_support.hpp"
#include "userspace_conn.hpp"

namespace ztp::testing {
namespace {

using userspace::Conn;

TEST(GatedSmallCopy, ASlowTypistPinsNoSlotWhenTheSmallBufferRollsOverInsideAHeldMatch) {
    const std::string secret = "Bearer secret-token-0123456789";
    auto db = redact::testing::compile({redact::testing::lit("token", secret)});
    ASSERT_TRUE(db);
    redact::Scratch scratch;
    ASSERT_TRUE(scratch.grow_for(*db));
    redact::RuleSet::RouteRules rules;
    rules.request = db;
    rules.on_pause = config::OnPause::hold;  // a pause releases nothing: the match stays held
    auto bulk = io::GatedPool::create(256 * 1024, 64).value();
    auto burst = io::GatedPool::create(crypto::kRecordMaxSize, 64, io::GatedPool::Layout::isolated).value();
    auto stage = conn::RedactionStage::open(rules, config::RuleDirection::request, &scratch);
    ASSERT_TRUE(stage);
    Conn c(io::GatedPools{*bulk, *burst}, std::move(stage).value());
    size_t most_pinned = 0;
    auto type = [&](const std::string& record) {  // one record, read after the client's readiness
        c.client_sends(record);
        c.client_readable();
        c.run();
        c.quiet();  // what a pause releases goes out (on_pause = hold: nothing of a possible match)
        most_pinned = std::max(most_pinned, bulk->slots_in_use() + burst->slots_in_use());
    };

    // Most of the small buffer: batches it takes whole (at most kCopyBelow each), no match in them.
    const std::string filler(conn::core::GatedSource::kCopyBelow - 1, 'x');
    const size_t fills = (conn::UserspaceRelay::kSmallBuffer - conn::core::GatedSource::kCopyBelow) / filler.size();
    for (size_t i = 0; i < fills; ++i) type(filler);
    ASSERT_EQ(c.backend_got.size(), fills * filler.size());
    ASSERT_EQ(most_pinned, 0u);

    // The bearer token but its last byte, one byte per record: the buffer rolls over while the
    // match is held open.
    for (char ch : secret.substr(0, secret.size() - 1)) type(std::string(1, ch));
    EXPECT_EQ(c.backend_got.size(), fills * filler.size()) << "a byte of the held match went out";
    EXPECT_EQ(most_pinned, 0u) << "held-back keystrokes pinned gated slots";
    type(secret.substr(secret.size() - 1) + " and more");
    EXPECT_EQ(c.failed, "");
    EXPECT_EQ(c.backend_got, std::string(fills * filler.size(), 'x') + std::string(secret.size(), '*') + " and more");
    EXPECT_EQ(c.ring.violations(), std::vector<std::string>{});
    c.relay.reset();
    EXPECT_EQ(bulk->slots_in_use() + burst->slots_in_use(), 0u);
}

}  // namespace
}  // namespace ztp::testing
