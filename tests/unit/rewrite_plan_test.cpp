// A plan survives being moved: relays queue and swap plans while iovecs point into them.
#include <gtest/gtest.h>

#include "redact_test_support.hpp"

namespace ztp::redact {
namespace {

TEST(RewritePlan, MovingKeepsShortReplacementSegmentsIntact) {
    // A replacement this short lives inside the plan's std::string object (small-string
    // optimisation), so it changes address when the plan moves.
    auto db = testing::compile({testing::with_replacement(testing::lit("card", "4111"), "[R]")});
    auto rw = Rewriter::open(db);
    ASSERT_TRUE(rw);
    Scratch scratch;
    ASSERT_TRUE(scratch.grow_for(*db));
    RewritePlan plan;
    ASSERT_TRUE(rw->feed(SharedBytes::copy_of("a 4111 b"), scratch, plan));
    ASSERT_TRUE(rw->finish(scratch, plan));
    ASSERT_EQ(plan.to_string(), "a [R] b");

    RewritePlan moved(std::move(plan));
    EXPECT_EQ(moved.to_string(), "a [R] b");
    RewritePlan assigned;
    assigned = std::move(moved);
    EXPECT_EQ(assigned.to_string(), "a [R] b");
    std::swap(assigned, plan);
    EXPECT_EQ(plan.to_string(), "a [R] b");
    EXPECT_TRUE(assigned.empty());
}

}  // namespace
}  // namespace ztp::redact
