#include "proxy/conn/pipe_budget.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace ztp::conn {
namespace {

using testing::ElementsAre;
using testing::HasSubstr;
using testing::IsEmpty;

TEST(PipeBudget, SizesAreRoundedAsTheKernelDoes) {
    EXPECT_EQ(kernel_pipe_size(100, 4096), 4096u);  // at least a page
    EXPECT_EQ(kernel_pipe_size(4096, 4096), 4096u);
    EXPECT_EQ(kernel_pipe_size(5000, 4096), 8192u);
    EXPECT_EQ(kernel_pipe_size(96 * 1024, 4096), 128u * 1024);  // a power of two, not a page multiple
    EXPECT_EQ(kernel_pipe_size(64 * 1024, 16384), 64u * 1024);
}

TEST(PipeBudget, TwoPipesPerConnectionPlusTheIdleOnes) {
    EXPECT_EQ((PipeDemand{10000, 4, 256, 65536}.pipes()), 20000u + 4 * 256);
    // A worker never keeps more idle pipes than connections ever used.
    EXPECT_EQ((PipeDemand{10, 2, 256, 65536}.pipes()), 20u + 2 * 20);
}

TEST(PipeBudget, TheDefaultsNeedMoreThanTheSoftLimit) {
    // limits.max_connections = 10000 and connection_buffer = 64KiB on a default kernel, 2 workers.
    PipeLimits kernel;  // 4 KiB pages, pipe-max-size 1 MiB, soft 16384 pages, no hard limit
    EXPECT_THAT(pipe_limit_warnings({10000, 2, 256, 65536}, kernel),
                ElementsAre("the kernel path may hold 20512 splice pipes (2 per connection for "
                            "limits.max_connections = 10000, and up to 256 idle in each of 2 workers) of 16 pages "
                            "each: 328192 pages for this user, over fs.pipe-user-pages-soft = 16384: past it new "
                            "pipes get 2 pages (8192 bytes) and cannot grow (counted in "
                            "ztproxy_pipe_resize_failures_total); raise it (sysctl fs.pipe-user-pages-soft=328192) "
                            "or lower limits.max_connections or limits.connection_buffer"));
}

TEST(PipeBudget, ASidecarFits) {
    // 100 connections: 200 pipes + 2 × 200 idle at most, 16 pages each = 9600 pages.
    EXPECT_THAT(pipe_limit_warnings({100, 2, 256, 65536}, PipeLimits{}), IsEmpty());
    // Exactly at the soft limit still fits: the kernel refuses only above it.
    PipeLimits exact;
    exact.user_pages_soft = 9600;
    EXPECT_THAT(pipe_limit_warnings({100, 2, 256, 65536}, exact), IsEmpty());
    exact.user_pages_soft = 9599;
    EXPECT_THAT(pipe_limit_warnings({100, 2, 256, 65536}, exact),
                ElementsAre(HasSubstr("sysctl fs.pipe-user-pages-soft=9600")));
}

TEST(PipeBudget, ABufferOverPipeMaxSize) {
    // 1.5 MiB is rounded to 2 MiB, which is what pipe-max-size is compared with. 4 connections:
    // 16 pipes of 512 pages stay under the soft limit.
    EXPECT_THAT(pipe_limit_warnings({4, 1, 256, 1536 * 1024}, PipeLimits{}),
                ElementsAre("limits.connection_buffer = 1572864 needs splice pipes of 2097152 bytes, over "
                            "fs.pipe-max-size = 1048576: the kernel path's pipes keep their default size (counted "
                            "in ztproxy_pipe_resize_failures_total); raise it (sysctl fs.pipe-max-size=2097152) or "
                            "lower limits.connection_buffer"));
    EXPECT_THAT(pipe_limit_warnings({10, 1, 256, 1024 * 1024}, PipeLimits{}), IsEmpty());
}

TEST(PipeBudget, TheHardLimitAndNoSoftLimit) {
    PipeLimits l;
    l.user_pages_soft = 0;  // 0: no limit
    l.user_pages_hard = 1000;
    auto lines = pipe_limit_warnings({100, 2, 256, 65536}, l);
    EXPECT_THAT(lines, ElementsAre(AllOf(HasSubstr("over fs.pipe-user-pages-hard = 1000"),
                                         HasSubstr("no pipe can be created"),
                                         HasSubstr("sysctl fs.pipe-user-pages-hard=9600"))));
}

TEST(PipeBudget, CapabilitiesLiftTheLimits) {
    PipeLimits l;
    l.user_pages_hard = 1000;
    l.cap_sys_resource = true;  // all three
    EXPECT_THAT(pipe_limit_warnings({10000, 2, 256, 4 << 20}, l), IsEmpty());
    l.cap_sys_resource = false;
    l.cap_sys_admin = true;  // the per-user pages only
    EXPECT_THAT(pipe_limit_warnings({10000, 2, 256, 4 << 20}, l),
                ElementsAre(HasSubstr("fs.pipe-max-size = 1048576")));
}

}  // namespace
}  // namespace ztp::conn
