// proxy/io/pipe_spill: a record's worth of plaintext into a pipe that has less room than that.
// The splice relay used to give up with internal_error here; now the bytes go in as the pipe
// drains, in order, with nothing lost or duplicated.
#include "proxy/io/pipe_spill.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "proxy/io/pipe_pool.hpp"

namespace ztp::io {
namespace {

std::string pattern(size_t n, char seed) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i % 23);
    return s;
}

std::string read_some(int fd, size_t max) {
    std::string out(max, '\0');
    const ssize_t n = ::read(fd, out.data(), max);
    out.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return out;
}

TEST(PipeSpill, WritesWhatFitsAndKeepsTheRestInOrder) {
    // Two pages: far less than a 16 KiB record. Kernel contract: each page of a write needs a free
    // slot of its own (only a sub-page tail merges into a partly filled one).
    PipePool pool(8192, 1);
    auto p = pool.take();
    ASSERT_TRUE(p);
    const size_t cap = p->capacity;
    ASSERT_LT(cap, 16384u);
    // Something spliced earlier still sits in the pipe.
    const std::string earlier = pattern(100, 'a');
    ASSERT_EQ(::write(p->write_end.get(), earlier.data(), earlier.size()), static_cast<ssize_t>(earlier.size()));

    const std::string record = pattern(16384, 'A');
    PipeSpill spill;
    spill.hold(record);
    EXPECT_EQ(spill.size(), record.size());
    auto first = spill.write_to(p->write_end.get());
    ASSERT_TRUE(first) << first.error().message();
    EXPECT_GT(*first, 0u);
    EXPECT_LT(*first, record.size());
    EXPECT_EQ(spill.size(), record.size() - *first);
    // Full now: nothing more goes in, and that is not an error.
    auto none = spill.write_to(p->write_end.get());
    ASSERT_TRUE(none);
    EXPECT_EQ(*none, 0u);

    std::string got;
    while (got.size() < earlier.size() + record.size()) {
        const std::string chunk = read_some(p->read_end.get(), cap);
        ASSERT_FALSE(chunk.empty()) << "pipe empty with " << spill.size() << " bytes still held";
        got += chunk;
        auto more = spill.write_to(p->write_end.get());
        ASSERT_TRUE(more) << more.error().message();
    }
    EXPECT_TRUE(spill.empty());
    EXPECT_EQ(got, earlier + record);
    EXPECT_TRUE(read_some(p->read_end.get(), 16).empty());  // nothing duplicated
}

TEST(PipeSpill, HoldAppendsBehindWhatIsLeft) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
    UniqueFd r(fds[0]), w(fds[1]);
    PipeSpill spill;
    spill.hold("first-");
    spill.hold("second");
    auto n = spill.write_to(w.get());
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 12u);
    EXPECT_TRUE(spill.empty());
    EXPECT_EQ(read_some(r.get(), 64), "first-second");
}

}  // namespace
}  // namespace ztp::io
