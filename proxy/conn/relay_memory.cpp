#include "proxy/conn/relay_memory.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <utility>

#include "crypto/record_layer.hpp"
#include "proxy/conn/pipe_budget.hpp"
#include "proxy/conn/record_path_relay.hpp"
#include "proxy/conn/userspace_relay.hpp"

namespace ztp::conn {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

size_t mib_up(size_t bytes) { return (bytes + kMiB - 1) / kMiB; }

}  // namespace

RelayMemoryBound relay_memory_bound(const RelayMemoryInputs& in) {
    const size_t buffer = in.connection_buffer;
    const size_t plans = 2 * RecordPathRelay::kMaxSegments * kPlanSegmentBytes;  // both directions' queues
    // The userspace path's chunk towards the client on rule routes: one batch of record slots.
    const size_t slots = std::clamp<size_t>(buffer / crypto::kRecordMaxPlaintext, 1,
                                            std::max<size_t>(1, in.pool_buffer / crypto::kRecordMaxSize));
    std::initializer_list<std::pair<const char*, size_t>> kinds = {
        {"route without rules, OpenSSL path", 2 * std::min(buffer, in.pool_buffer) + plans},
        {"route without rules, userspace path", in.pool_buffer + plans},
        // Kernel memory, charged to the user in pipe pages (pipe_budget.hpp).
        {"route without rules, kernel path", 2 * kernel_pipe_size(buffer, 4096)},
    };
    std::initializer_list<std::pair<const char*, size_t>> rule_kinds = {
        {"route with rules, OpenSSL or kernel path", 2 * RecordPathRelay::kMaxChunks * buffer + plans},
        {"route with rules, userspace path",
         in.pool_buffer + UserspaceRelay::kMaxDownChunks * slots * crypto::kRecordMaxPlaintext +
             UserspaceRelay::kSmallBuffer + plans},
    };
    RelayMemoryBound out;
    auto consider = [&](const std::pair<const char*, size_t>& k) {
        if (k.second > out.per_connection) out = {k.second, k.first, 0};
    };
    for (const auto& k : kinds) consider(k);
    if (in.rules)
        for (const auto& k : rule_kinds) consider(k);
    out.process = out.per_connection * in.max_connections + in.workers * in.gated_bytes_per_worker;
    return out;
}

std::optional<std::string> relay_memory_warning(const RelayMemoryInputs& in, const RelayMemoryBound& bound,
                                                size_t memory_limit) {
    if (memory_limit == 0 || bound.process <= memory_limit) return std::nullopt;
    const size_t fixed = in.workers * in.gated_bytes_per_worker;
    const size_t fits = memory_limit > fixed ? (memory_limit - fixed) / std::max<size_t>(1, bound.per_connection) : 0;
    std::ostringstream w;
    w << "relay memory may reach " << mib_up(bound.process) << " MiB (max_connections " << in.max_connections
      << " x " << (bound.per_connection + 1023) / 1024 << " KiB on a " << bound.costliest << ", plus "
      << mib_up(fixed) << " MiB of gated pools), above this process's memory limit of " << mib_up(memory_limit)
      << " MiB: set limits.max_connections to at most " << fits << " or lower limits.connection_buffer";
    return w.str();
}

size_t process_memory_limit() {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
    size_t limit = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
    // The process's cgroup: "0::/path" (v2, memory.max, "max" = none) or "N:memory:/path" (v1,
    // memory.limit_in_bytes, a huge number = none). The smaller of it and the machine's memory.
    std::string line;
    std::ifstream groups("/proc/self/cgroup");
    while (std::getline(groups, line)) {
        std::string file;
        if (line.rfind("0::", 0) == 0) file = "/sys/fs/cgroup" + line.substr(3) + "/memory.max";
        else if (auto at = line.find(":memory:"); at != std::string::npos)
            file = "/sys/fs/cgroup/memory" + line.substr(at + 8) + "/memory.limit_in_bytes";
        std::string value;
        size_t n = 0;
        if (std::ifstream f(file); !file.empty() && f && (f >> value)) {
            auto [end, err] = std::from_chars(value.data(), value.data() + value.size(), n);
            if (err == std::errc{} && end == value.data() + value.size() && n > 0 && (limit == 0 || n < limit))
                limit = n;
        }
    }
    return limit;
}

}  // namespace ztp::conn
