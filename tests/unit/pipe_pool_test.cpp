#include "proxy/io/pipe_pool.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

namespace ztp::io {
namespace {

TEST(PipePool, EmptyPipesAreReused) {
    PipePool pool(64 * 1024, 4);
    auto p = pool.take();
    ASSERT_TRUE(p);
    EXPECT_GE(p->capacity, 64u * 1024);
    int read_fd = p->read_end.get();
    pool.give_back(std::move(p).value(), 0);
    EXPECT_EQ(pool.idle(), 1u);
    auto again = pool.take();
    ASSERT_TRUE(again);
    EXPECT_EQ(again->read_end.get(), read_fd);
    EXPECT_EQ(pool.created(), 1u);
}

TEST(PipePool, APipeHoldingBytesIsNeverReused) {
    PipePool pool(4096, 4);
    auto p = pool.take();
    ASSERT_TRUE(p);
    ASSERT_EQ(::write(p->write_end.get(), "secret", 6), 6);
    // Even if the caller's bookkeeping says empty, the kernel's count wins: leftover plaintext
    // must never reach the next connection.
    pool.give_back(std::move(p).value(), 0);
    EXPECT_EQ(pool.idle(), 0u);
    auto q = pool.take();
    ASSERT_TRUE(q);
    char buf[8];
    EXPECT_EQ(::read(q->read_end.get(), buf, sizeof buf), -1);  // fresh and empty: EAGAIN
    EXPECT_EQ(errno, EAGAIN);
    pool.give_back(std::move(q).value(), 3);  // the caller says bytes are inside: closed too
    EXPECT_EQ(pool.idle(), 0u);
}

TEST(PipePool, KeepsAtMostMaxIdle) {
    PipePool pool(4096, 2);
    std::vector<Pipe> pipes;
    for (int i = 0; i < 5; ++i) pipes.push_back(std::move(pool.take()).value());
    for (auto& p : pipes) pool.give_back(std::move(p), 0);
    EXPECT_EQ(pool.idle(), 2u);
}

}  // namespace
}  // namespace ztp::io
