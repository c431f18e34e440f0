// Kernel contracts of the event loop, on real sockets and a real io_uring.
#include "proxy/io/event_loop.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

#include "proxy/io/pipe_pool.hpp"

namespace ztp::io {
namespace {

struct Recorder final : CompletionHandler {
    std::vector<std::pair<uint8_t, int>> seen;
    void on_completion(uint8_t tag, int res, uint32_t) override { seen.emplace_back(tag, res); }
};

struct Fixture {
    Fixture() {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        a.reset(sv[0]);
        b.reset(sv[1]);
        auto l = EventLoop::create(64);
        EXPECT_TRUE(l);
        loop = std::move(l).value();
        auto p = pool.take();
        EXPECT_TRUE(p);
        pipe = std::move(p).value();
    }
    // Runs the loop until `n` completions arrived for the recorder (bounded).
    void run_until(Recorder& r, size_t n, int rounds = 100) {
        __kernel_timespec ts{0, 50'000'000};
        Op tick{nullptr, 0};
        for (int i = 0; i < rounds && r.seen.size() < n; ++i) {
            loop->timeout(&tick, &ts);
            ASSERT_TRUE(loop->run_once());
        }
    }
    UniqueFd a, b;
    std::unique_ptr<EventLoop> loop;
    PipePool pool{65536, 1};
    Pipe pipe;
};

// Every test here (and every relay test) runs on a restricted ring: an opcode missing from the
// event loop's list would complete with -EACCES and fail them.
TEST(EventLoop, RingIsLimitedToItsOwnOpcodes) {
    auto loop = EventLoop::create(8);
    ASSERT_TRUE(loop) << loop.error().message();
    struct utsname u {};
    ASSERT_EQ(::uname(&u), 0);
    int major = 0, minor = 0;
    std::sscanf(u.release, "%d.%d", &major, &minor);
    if (major < 5 || (major == 5 && minor < 10)) GTEST_SKIP() << "IORING_REGISTER_RESTRICTIONS needs Linux 5.10";
    EXPECT_TRUE((*loop)->restricted());
}

TEST(EventLoop, PollThenSpliceReportsTheSpliceOnce) {
    Fixture f;
    Recorder r;
    Op op{&r, 7};
    f.loop->poll_then_splice(&op, f.a.get(), f.pipe.write_end.get(), 65536);
    ASSERT_EQ(::write(f.b.get(), "hello", 5), 5);
    f.run_until(r, 1);
    f.run_until(r, 2, 4);  // give a wrongly doubled completion the chance to show up
    ASSERT_EQ(r.seen.size(), 1u);
    EXPECT_EQ(r.seen[0], std::make_pair(uint8_t{7}, 5));
}

TEST(EventLoop, CancelledPollThenSpliceStillCompletesItsOpExactlyOnce) {
    // The owner frees itself when its in-flight count reaches zero: a cancelled pair that posts
    // no completion for the op would leak the connection forever.
    Fixture f;
    Recorder r;
    Op op{&r, 9};
    f.loop->poll_then_splice(&op, f.a.get(), f.pipe.write_end.get(), 65536);
    f.loop->cancel_fd(f.a.get());
    f.run_until(r, 1);
    f.run_until(r, 2, 4);
    ASSERT_EQ(r.seen.size(), 1u);
    EXPECT_EQ(r.seen[0], std::make_pair(uint8_t{9}, -ECANCELED));
}

}  // namespace
}  // namespace ztp::io
