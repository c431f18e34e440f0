// The relay memory bound stated at start (proxy/conn/relay_memory.hpp): per connection from the
// relays' own caps, per process times max_connections plus the fixed gated pools, and the warning
// that names the max_connections that fits.
#include "proxy/conn/relay_memory.hpp"

#include <gtest/gtest.h>

#include "proxy/conn/record_path_relay.hpp"

namespace ztp::conn {
namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

RelayMemoryInputs defaults(bool rules) {
    // 64 KiB connection_buffer; the worker's pool buffer holds a batch of 16 records of 16 KiB + 256.
    return {64 * kKiB, 16 * (16 * kKiB + 256), 10000, 2, 4096 * 256 * kKiB, rules};
}

TEST(RelayMemory, WithoutRulesTheUserspaceRecordBufferIsTheCostliest) {
    const auto b = relay_memory_bound(defaults(false));
    const size_t plans = 2 * RecordPathRelay::kMaxSegments * kPlanSegmentBytes;
    EXPECT_EQ(b.per_connection, 16 * (16 * kKiB + 256) + plans);
    EXPECT_STREQ(b.costliest, "route without rules, userspace path");
    EXPECT_EQ(b.process, b.per_connection * 10000 + 2 * 4096 * 256 * kKiB);
}

TEST(RelayMemory, RulesWithALargeBufferMakeTheRecordPathChunksTheCostliest) {
    auto in = defaults(true);
    in.connection_buffer = 1 * kMiB;
    in.pool_buffer = 64 * (16 * kKiB + 256);  // as the worker sizes it: a batch of 1 MiB of records
    const auto b = relay_memory_bound(in);
    // Two directions of kMaxChunks chunks of connection_buffer, and both plan queues.
    EXPECT_EQ(b.per_connection, 2 * RecordPathRelay::kMaxChunks * kMiB + 2 * RecordPathRelay::kMaxSegments * 64);
    EXPECT_STREQ(b.costliest, "route with rules, OpenSSL or kernel path");
    in.rules = false;  // without rules: the OpenSSL path's two buffers (and both plan queues)
    const auto plain = relay_memory_bound(in);
    EXPECT_EQ(plain.per_connection, 2 * kMiB + 2 * RecordPathRelay::kMaxSegments * 64);
    EXPECT_STREQ(plain.costliest, "route without rules, OpenSSL path");
}

TEST(RelayMemory, WarnsWithTheMaxConnectionsThatFits) {
    const auto in = defaults(true);
    const auto b = relay_memory_bound(in);
    EXPECT_FALSE(relay_memory_warning(in, b, 0)) << "an unknown limit";
    EXPECT_FALSE(relay_memory_warning(in, b, b.process)) << "exactly at the limit";
    const size_t limit = 4096 * kMiB;
    auto w = relay_memory_warning(in, b, limit);
    ASSERT_TRUE(w);
    const size_t fits = (limit - 2 * 4096 * 256 * kKiB) / b.per_connection;
    EXPECT_NE(w->find("set limits.max_connections to at most " + std::to_string(fits)), std::string::npos) << *w;
    EXPECT_NE(w->find("memory limit of 4096 MiB"), std::string::npos) << *w;
    EXPECT_NE(w->find(b.costliest), std::string::npos) << *w;
}

TEST(RelayMemory, TheProcessLimitIsReadFromThisMachine) {
    const size_t limit = process_memory_limit();
    EXPECT_GT(limit, 16 * kMiB);  // a cgroup limit or the machine's memory, never nothing here
}

}  // namespace
}  // namespace ztp::conn
