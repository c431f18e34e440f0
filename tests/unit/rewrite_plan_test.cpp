// A plan survives being moved: relays queue and swap plans while iovecs point into them.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/io/gated_pool.hpp"

#include "redact_test_support.hpp"

namespace ztp::redact {
namespace {

// `input` rewritten by one rule that replaces "4111" with "[R]". A replacement this short lives
// inside the plan's std::string object (small-string optimisation), so it changes address when
// the plan moves or is swapped.
void rewrite_cards(std::string_view input, RewritePlan& plan) {
    auto db = testing::compile({testing::with_replacement(testing::lit("card", "4111"), "[R]")});
    auto rw = Rewriter::open(db);
    ASSERT_TRUE(rw);
    Scratch scratch;
    ASSERT_TRUE(scratch.grow_for(*db));
    ASSERT_TRUE(rw->feed(SharedBytes::copy_of(input), scratch, plan));
    ASSERT_TRUE(rw->finish(scratch, plan));
}

TEST(RewritePlan, MovingKeepsShortReplacementSegmentsIntact) {
    RewritePlan plan;
    ASSERT_NO_FATAL_FAILURE(rewrite_cards("a 4111 b", plan));
    ASSERT_EQ(plan.to_string(), "a [R] b");

    RewritePlan moved(std::move(plan));
    EXPECT_EQ(moved.to_string(), "a [R] b");
    RewritePlan assigned;
    assigned = std::move(moved);
    EXPECT_EQ(assigned.to_string(), "a [R] b");
    std::swap(assigned, plan);
    EXPECT_EQ(plan.to_string(), "a [R] b");
    EXPECT_TRUE(assigned.empty());
    plan.swap(assigned);
    EXPECT_EQ(assigned.to_string(), "a [R] b");
    EXPECT_TRUE(plan.empty());
}

// Swapping two plans that both own short replacements: each one's iovecs follow its bytes into
// the other object, and the emptied plan keeps working after clear().
TEST(RewritePlan, SwappingTwoPlansWithShortReplacements) {
    RewritePlan a, b;
    ASSERT_NO_FATAL_FAILURE(rewrite_cards("x 4111 y", a));
    ASSERT_NO_FATAL_FAILURE(rewrite_cards("4111-4111", b));
    ASSERT_EQ(a.to_string(), "x [R] y");
    ASSERT_EQ(b.to_string(), "[R]-[R]");
    a.swap(b);
    EXPECT_EQ(a.to_string(), "[R]-[R]");
    EXPECT_EQ(b.to_string(), "x [R] y");
    swap(a, b);  // the friend, as std::swap-style generic code finds it
    EXPECT_EQ(a.to_string(), "x [R] y");
    EXPECT_EQ(b.to_string(), "[R]-[R]");
    a.consume(2);
    b.clear();
    b.swap(a);
    EXPECT_EQ(b.to_string(), "[R] y");
    EXPECT_TRUE(a.empty());
}

// A flood of 1-byte pieces of one buffer costs one iovec and one reference, not one per piece
// (issue 12: references were the unbounded unit on rule routes).
TEST(RewritePlan, PiecesOfOneBufferHoldOneReference) {
    auto chunk = std::make_shared<std::array<uint8_t, 4096>>();
    chunk->fill('x');
    auto whole = SharedBytes::adopt(chunk, {chunk->data(), chunk->size()});
    RewritePlan plan;
    for (size_t i = 0; i < chunk->size(); ++i) plan.pass_through(whole.slice(i, 1));
    EXPECT_EQ(plan.iovecs().size(), 1u);
    EXPECT_EQ(plan.references(), 1u);
    EXPECT_EQ(plan.bytes(), 4096u);
    whole = SharedBytes();
    EXPECT_EQ(chunk.use_count(), 2);  // ours and the plan's one reference
    plan.clear();
    EXPECT_EQ(chunk.use_count(), 1);
}

// Contiguous bytes under two owners are one iovec but two references: each owner keeps only its
// own bytes alive.
TEST(RewritePlan, ContiguousBytesOfTwoOwnersKeepBoth) {
    auto buf = std::make_shared<std::array<uint8_t, 8>>();
    std::memcpy(buf->data(), "abcdefgh", 8);
    std::shared_ptr<const void> first(buf), second(std::shared_ptr<int>(new int(0)), buf->data());
    RewritePlan plan;
    plan.pass_through(SharedBytes::adopt(first, {buf->data(), 4}));
    plan.pass_through(SharedBytes::adopt(second, {buf->data() + 4, 4}));
    EXPECT_EQ(plan.iovecs().size(), 1u);
    EXPECT_EQ(plan.references(), 2u);
    EXPECT_EQ(plan.to_string(), "abcdefgh");
}

// The same for verified bytes: slices of one gated slot hold one reference on it, and the slot is
// recycled once the plan and the buffer are gone.
TEST(RewritePlan, SlicesOfOneGatedSlotHoldOneReference) {
    auto pool = io::GatedPool::create(64 * 1024, 1);
    ASSERT_TRUE(pool);
    auto buf = (*pool)->acquire();
    ASSERT_TRUE(buf);
    std::memset(buf->ingest().data(), 'v', 1000);
    auto verified = buf->release(0, 1000);
    ASSERT_TRUE(verified);
    RewritePlan plan;
    for (size_t i = 0; i < 1000; ++i) plan.pass_through(SharedBytes(verified->slice(i, 1)));
    EXPECT_EQ(plan.references(), 1u);
    EXPECT_EQ(plan.iovecs().size(), 1u);
    EXPECT_EQ(plan.to_string(), std::string(1000, 'v'));
    buf->reset();
    verified->reset();
    EXPECT_EQ((*pool)->slots_in_use(), 1u);  // the plan's reference
    plan.clear();
    EXPECT_EQ((*pool)->slots_in_use(), 0u);
}

}  // namespace
}  // namespace ztp::redact
