// What the kernel path's splice pipes need of the kernel, and whether this host grants it.
// Each kernel-path connection splices through one pipe per direction, sized with F_SETPIPE_SZ to
// `connection_buffer`. Linux counts pipe memory per user in pages (one per pipe slot) under three
// sysctls:
//   fs.pipe-max-size        the largest size an unprivileged F_SETPIPE_SZ may ask for (EPERM above)
//   fs.pipe-user-pages-soft once the user's pipes hold more pages, new pipes get 2 slots and
//                           F_SETPIPE_SZ cannot grow them (EPERM)
//   fs.pipe-user-pages-hard once over it, creating a pipe fails (0 = no limit)
// CAP_SYS_RESOURCE lifts all three, CAP_SYS_ADMIN the two per-user ones; ztproxy drops both before
// the workers start (README "Privileges and capabilities"), so they normally apply.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace ztp::conn {

struct PipeLimits {
    size_t page_size = 4096;
    size_t max_size = 1048576;       // fs.pipe-max-size, bytes
    size_t user_pages_soft = 16384;  // fs.pipe-user-pages-soft; 0 = no limit
    size_t user_pages_hard = 0;      // fs.pipe-user-pages-hard; 0 = no limit
    bool cap_sys_resource = false;   // effective: exempt from all three
    bool cap_sys_admin = false;      // effective: exempt from the per-user pages
};

// This host's values (the kernel's defaults where /proc/sys/fs cannot be read) and the calling
// thread's effective capabilities.
PipeLimits read_pipe_limits();

// The size F_SETPIPE_SZ makes of `bytes`: a power of two, at least one page (fs/pipe.c,
// round_pipe_size).
size_t kernel_pipe_size(size_t bytes, size_t page_size);

struct PipeDemand {
    size_t max_connections = 0;    // limits.max_connections, per process
    size_t workers = 1;
    size_t idle_per_worker = 0;    // empty pipes each worker's PipePool keeps for reuse
    size_t connection_buffer = 0;  // limits.connection_buffer, bytes: the size asked of every pipe
    // Every connection on the kernel path holds two pipes; idle ones count for the user too.
    size_t pipes() const;
};

// One warning per limit the configuration may run into, with the numbers and the sysctl value
// that fits; empty when everything fits. Pure: worker 0 logs them at start.
std::vector<std::string> pipe_limit_warnings(const PipeDemand& demand, const PipeLimits& limits);

}  // namespace ztp::conn
