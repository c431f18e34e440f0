// The system-call allow-list (libseccomp), installed on every thread once ztproxy is bound,
// unprivileged and its workers' rings exist: from then on the process can serve connections,
// reload its policy (read files, build TLS contexts, update BPF maps) and exit, and nothing else.
//
// Known gap: io_uring operations run in the kernel on the ring's behalf and never pass through
// seccomp. A process that can submit to a ring can do whatever the ring's opcodes do (connect,
// open files...). ztproxy takes away io_uring_setup (no new rings once the workers' exist); the
// opcodes of the existing rings are limited by the event loop (proxy/io/event_loop.hpp).
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
