// Kernel contracts of the event loop, on real sockets and a real io_uring.
#include "proxy/io/event_loop.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
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

// The splice relay's contract with the loop: splice_now never blocks, whatever the socket's own
// mode, and says EAGAIN for an empty source and for a pipe without room.
TEST(EventLoop, SpliceNowMovesWhatIsThereAndNeverBlocks) {
    Fixture f;
    EXPECT_EQ(f.loop->splice_now(f.a.get(), f.pipe.write_end.get(), 65536), -EAGAIN) << "nothing sent yet";
    ASSERT_EQ(::write(f.b.get(), "hello", 5), 5);
    EXPECT_EQ(f.loop->splice_now(f.a.get(), f.pipe.write_end.get(), 65536), 5);
    EXPECT_EQ(f.loop->splice_now(f.a.get(), f.pipe.write_end.get(), 65536), -EAGAIN);
    EXPECT_EQ(f.loop->splice_now(f.pipe.read_end.get(), f.b.get(), 65536), 5);
    char got[8] = {};
    ASSERT_EQ(::read(f.a.get(), got, sizeof got), 5);
    EXPECT_EQ(std::string(got, 5), "hello");
    EXPECT_EQ(f.loop->splice_now(f.pipe.read_end.get(), f.b.get(), 65536), -EAGAIN) << "an empty pipe";
    ::shutdown(f.b.get(), SHUT_WR);
    EXPECT_EQ(f.loop->splice_now(f.a.get(), f.pipe.write_end.get(), 65536), 0) << "the peer's FIN";
}

}  // namespace
}  // namespace ztp::io
