// The system-call allow-list (libseccomp), installed on every thread once ztproxy is bound,
// unprivileged and its workers' rings exist: from then on the process can serve connections,
// reload its policy (read files, build TLS contexts, update BPF maps) and exit, and nothing else.
//
// io_uring: operations submitted to a ring run in the kernel on the ring's behalf and never pass
// through seccomp. Two things keep the rings from becoming a way around this filter: the filter
// leaves out io_uring_setup (no new rings once the workers' exist), and each worker's ring only
// accepts the opcodes its event loop uses (IORING_REGISTER_RESTRICTIONS, proxy/io/event_loop.hpp:
// accept, connect, send/recv(msg), read, splice, poll, timeouts, cancel; no openat, no socket).
// The remaining gap: ring operations are not argument-checked, so a ring can connect anywhere and
// read any descriptor the process holds, as the allowed system calls can. On kernels before 5.10
// the rings are unrestricted (a warning at start).
#pragma once

#include <seccomp.h>

#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "config/policy.hpp"
#include "proxy/base/result.hpp"

namespace ztp::app {

class SeccompFilter {
public:
    // What happens to a call outside the list. kill: the whole process dies with SIGSYS (and the
    // kernel's audit log names the call); log: the call runs and the kernel logs it.
    enum class Violation { kill, log };

    static Result<SeccompFilter> build(Violation violation);

    // Loads the filter on every thread of the process (TSYNC); irreversible.
    Result<void> install();
    // The BPF program, as the kernel would get it (for tests and `strace`-free inspection).
    Result<void> export_bpf(int fd) const;

    // Allow-list names libseccomp does not know on this architecture (e.g. x86-only calls on arm64).
    static std::vector<std::string> unknown_syscalls();

private:
    struct Release {
        void operator()(void* ctx) const { seccomp_release(ctx); }
    };
    using Ctx = std::unique_ptr<std::remove_pointer_t<scmp_filter_ctx>, Release>;

    explicit SeccompFilter(Ctx ctx) : ctx_(std::move(ctx)) {}
    Ctx ctx_;
};

// Installs what `mode` asks for and logs it. false: refuse to start (require on a kernel without
// seccomp, or a filter that would not load).
bool apply_seccomp(config::SeccompMode mode);

}  // namespace ztp::app
