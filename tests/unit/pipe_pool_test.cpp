#include "proxy/io/pipe_pool.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bit>
#include <fstream>
#include <thread>
#include <vector>

namespace ztp::io {
namespace {

// What the pipe really holds: non-blocking writes until EAGAIN (whole pages, one slot each).
size_t fill(const Pipe& p) {
    std::vector<char> page(4096, 'x');
    size_t total = 0;
    for (;;) {
        ssize_t n = ::write(p.write_end.get(), page.data(), page.size());
        if (n <= 0) break;
        total += static_cast<size_t>(n);
    }
    return total;
}

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

// F_SETPIPE_SZ above 2 GiB is EINVAL for everyone, root included (fs/pipe.c, round_pipe_size):
// the pool must report the size the pipe has, count the failure, and not keep the pipe.
TEST(PipePool, ASizeTheKernelRefusesIsCountedAndTheRealCapacityUsed) {
    std::atomic<uint64_t> total{0};
    const size_t asked = (size_t{1} << 31) + 4096;
    PipePool pool(asked, 4, &total);
    auto p = pool.take();
    ASSERT_TRUE(p) << p.error().message();
    EXPECT_EQ(pool.resize_failures(), 1u);
    EXPECT_EQ(total.load(), 1u);
    const int real = ::fcntl(p->write_end.get(), F_GETPIPE_SZ);
    ASSERT_GT(real, 0);
    EXPECT_EQ(p->capacity, static_cast<size_t>(real));
    EXPECT_LT(p->capacity, asked);
    EXPECT_EQ(fill(*p), p->capacity);  // the number the relay fills up to is what fits
    char buf[4096];
    while (::read(p->read_end.get(), buf, sizeof buf) > 0) {
    }
    pool.give_back(std::move(p).value(), 0);
    EXPECT_EQ(pool.idle(), 0u);  // empty, but smaller than asked: the next take tries again
    ASSERT_TRUE(pool.take());
    EXPECT_EQ(pool.resize_failures(), 2u);
    EXPECT_EQ(pool.created(), 2u);
}

// The production case: ztproxy runs without CAP_SYS_RESOURCE, and a connection_buffer above
// fs.pipe-max-size is refused (EPERM). Capabilities are per thread: this thread drops its
// effective set (a non-root run has none to drop) and asks for twice pipe-max-size.
TEST(PipePool, OverPipeMaxSizeWithoutCapSysResourceKeepsTheDefaultSize) {
    size_t max_size = 0;
    std::ifstream("/proc/sys/fs/pipe-max-size") >> max_size;
    if (max_size == 0 || max_size > (size_t{1} << 29)) GTEST_SKIP() << "pipe-max-size " << max_size;
    const size_t asked = std::bit_ceil(max_size) * 2;
    std::atomic<uint64_t> total{0};
    size_t capacity = 0, failures = 0;
    int real = -1;
    std::thread([&] {
        __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
        __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
        ASSERT_EQ(::syscall(SYS_capget, &header, data), 0);
        for (auto& d : data) d.effective = 0;
        ASSERT_EQ(::syscall(SYS_capset, &header, data), 0);
        PipePool pool(asked, 4, &total);
        auto p = pool.take();
        ASSERT_TRUE(p) << p.error().message();
        capacity = p->capacity;
        failures = pool.resize_failures();
        real = ::fcntl(p->write_end.get(), F_GETPIPE_SZ);
    }).join();
    EXPECT_EQ(failures, 1u);
    EXPECT_EQ(total.load(), 1u);
    EXPECT_EQ(capacity, static_cast<size_t>(real));
    EXPECT_LE(capacity, max_size);
}

}  // namespace
}  // namespace ztp::io
