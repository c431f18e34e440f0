#include "proxy/conn/pipe_budget.hpp"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <fstream>

#include <spdlog/fmt/fmt.h>

namespace ztp::conn {

namespace {

void read_sysctl(const char* path, size_t& out) {
    size_t v = 0;
    if (std::ifstream f(path); f && (f >> v)) out = v;
}

// capget(2) directly: the calling thread's effective set, without linking libcap here.
bool effective(int cap) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
    if (::syscall(SYS_capget, &header, data) != 0) return false;
    return (data[cap / 32].effective >> (cap % 32)) & 1u;
}

}  // namespace

PipeLimits read_pipe_limits() {
    PipeLimits l;
    if (long page = ::sysconf(_SC_PAGESIZE); page > 0) l.page_size = static_cast<size_t>(page);
    read_sysctl("/proc/sys/fs/pipe-max-size", l.max_size);
    read_sysctl("/proc/sys/fs/pipe-user-pages-soft", l.user_pages_soft);
    read_sysctl("/proc/sys/fs/pipe-user-pages-hard", l.user_pages_hard);
    l.cap_sys_resource = effective(CAP_SYS_RESOURCE);
    l.cap_sys_admin = effective(CAP_SYS_ADMIN);
    return l;
}

size_t kernel_pipe_size(size_t bytes, size_t page_size) { return std::bit_ceil(std::max(bytes, page_size)); }

size_t PipeDemand::pipes() const {
    const size_t in_use = 2 * max_connections;
    // A worker keeps at most idle_per_worker empty pipes, and never more than it once used.
    return in_use + workers * std::min(idle_per_worker, in_use);
}

std::vector<std::string> pipe_limit_warnings(const PipeDemand& d, const PipeLimits& l) {
    std::vector<std::string> out;
    const size_t size = kernel_pipe_size(d.connection_buffer, l.page_size);
    // fs/pipe.c (pipe_set_size): the rounded size is compared with pipe-max-size, and only a
    // growing resize is refused; CAP_SYS_RESOURCE lifts it.
    if (!l.cap_sys_resource && size > l.max_size)
        out.push_back(fmt::format(
            "limits.connection_buffer = {} needs splice pipes of {} bytes, over fs.pipe-max-size = {}: the kernel "
            "path's pipes keep their default size (counted in ztproxy_pipe_resize_failures_total); raise it "
            "(sysctl fs.pipe-max-size={}) or lower limits.connection_buffer",
            d.connection_buffer, size, l.max_size, size));
    // The per-user page counts: one page per slot, every pipe of the user (this process's and any
    // other's running as the same user), lifted by CAP_SYS_RESOURCE or CAP_SYS_ADMIN.
    if (l.cap_sys_resource || l.cap_sys_admin) return out;
    const size_t pages_per_pipe = size / l.page_size;
    const size_t pipes = d.pipes();
    const size_t pages = pipes * pages_per_pipe;
    const std::string need = fmt::format(
        "the kernel path may hold {} splice pipes (2 per connection for limits.max_connections = {}, and up to {} "
        "idle in each of {} workers) of {} pages each: {} pages for this user",
        pipes, d.max_connections, std::min(d.idle_per_worker, 2 * d.max_connections), d.workers, pages_per_pipe,
        pages);
    if (l.user_pages_soft != 0 && pages > l.user_pages_soft)
        out.push_back(fmt::format(
            "{}, over fs.pipe-user-pages-soft = {}: past it new pipes get 2 pages ({} bytes) and cannot grow "
            "(counted in ztproxy_pipe_resize_failures_total); raise it (sysctl fs.pipe-user-pages-soft={}) or "
            "lower limits.max_connections or limits.connection_buffer",
            need, l.user_pages_soft, 2 * l.page_size, pages));
    if (l.user_pages_hard != 0 && pages > l.user_pages_hard)
        out.push_back(fmt::format(
            "{}, over fs.pipe-user-pages-hard = {}: past it no pipe can be created and kernel-path connections "
            "close as internal_error; raise it (sysctl fs.pipe-user-pages-hard={}) or lower limits.max_connections "
            "or limits.connection_buffer",
            need, l.user_pages_hard, pages));
    return out;
}

}  // namespace ztp::conn
