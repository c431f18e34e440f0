#include "proxy/app/seccomp_filter.hpp"

#include <fcntl.h>
#include <linux/bpf.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <cstring>

#include "proxy/base/log.hpp"

namespace ztp::app {

namespace {

// Allowed whatever their arguments. Everything else is either allowed with argument checks
// (add_conditional_rules) or not at all: no exec, no fork, no ptrace, no mount, no namespaces, no
// new io_uring instance, no prctl, no kill of other processes, no file creation.
constexpr const char* kAllowed[] = {
    // memory (mmap and mprotect: see the W^X rule below)
    "brk", "munmap", "mremap", "madvise",
    // descriptors and files: reads for reloads (policy, certificates, keys); no creation
    "read", "write", "readv", "writev", "pread64", "close", "lseek", "fstat", "newfstatat", "statx",
    "fcntl", "dup", "dup3", "getcwd", "getdents64", "readlink", "faccessat", "faccessat2",
    "pipe2", "eventfd2", "memfd_create", "ftruncate",
    // sockets: backend connections, kTLS (setsockopt TCP_ULP, SOL_TLS), control records (recvmsg
    // with cmsg), the kTLS probe a reload runs for `ktls = "require"`, the admin endpoint,
    // sd_notify (an AF_UNIX datagram); socket() itself is limited by family below
    "connect", "bind", "listen", "accept", "accept4", "getsockname", "getpeername", "setsockopt",
    "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "splice",
    // io_uring on the workers' existing rings (io_uring_setup is not here: no new rings)
    "io_uring_enter", "io_uring_register",
    // waiting: the demo backend polls; the admin endpoint's event loop uses epoll (its epoll
    // instance is created before the filter, so epoll_create1 is not here)
    "poll", "ppoll", "epoll_ctl", "epoll_wait", "epoll_pwait",
    // threads, signals, time, randomness, exit. time, gettimeofday, clock_gettime and getcpu are
    // vDSO calls on most kernels but real system calls where there is no vDSO (User-Mode Linux).
    "futex", "set_robust_list", "rseq", "sched_yield", "sched_getaffinity", "gettid", "getpid",
    "getuid", "geteuid", "getgid", "getegid", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn",
    "rt_sigtimedwait", "sigaltstack", "restart_syscall", "nanosleep", "clock_nanosleep",
    "clock_gettime", "clock_getres", "gettimeofday", "time", "getcpu", "getrandom", "exit", "exit_group",
};

using Rule = scmp_arg_cmp;

Result<void> allow(scmp_filter_ctx ctx, const char* name, std::initializer_list<Rule> args = {}) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return {};  // not on this architecture: cannot be called either
    int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, static_cast<unsigned>(args.size()), args.begin());
    if (rc < 0) return make_error(rc, "seccomp_rule_add");
    return {};
}

Result<void> add_conditional_rules(scmp_filter_ctx ctx) {
    // W^X: no new executable memory after start. ztproxy and its libraries load no code later
    // (no dlopen, no JIT), so an attempt is an attack turning data into code.
    for (const char* name : {"mmap", "mprotect"})
        if (auto r = allow(ctx, name, {SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)}); !r) return r;
    // Files are only read after start (reloads); nothing is created, truncated or written.
    const scmp_datum_t write_flags = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND;
    if (auto r = allow(ctx, "openat", {SCMP_A2(SCMP_CMP_MASKED_EQ, write_flags, 0)}); !r) return r;
    // TCP over IPv4/IPv6, and AF_UNIX for sd_notify. No netlink, packet or raw sockets.
    for (int family : {AF_INET, AF_INET6, AF_UNIX})
        if (auto r = allow(ctx, "socket", {SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(family))}); !r) return r;
    // ioctl is a large kernel surface: only the pipe pool's FIONREAD (is a pipe empty before its
    // reuse?), FIONBIO, and the TCGETS of isatty() in the logger.
    for (unsigned long request : {FIONREAD, FIONBIO, TCGETS})
        if (auto r = allow(ctx, "ioctl", {SCMP_A1(SCMP_CMP_EQ, request)}); !r) return r;
    // getrlimit is prlimit64(0, resource, NULL, old): reading only.
    if (auto r = allow(ctx, "prlimit64", {SCMP_A2(SCMP_CMP_EQ, 0)}); !r) return r;
    // abort() signals its own thread; no signals to other processes.
    if (auto r = allow(ctx, "tgkill", {SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(::getpid()))}); !r) return r;
    // Threads, not processes: clone must carry CLONE_THREAD (flags are argument 0 on x86-64 and
    // arm64). clone3 passes its flags in memory, which a filter cannot read, so it gets ENOSYS
    // and glibc falls back to clone.
    if (auto r = allow(ctx, "clone", {SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)}); !r) return r;
    int clone3 = seccomp_syscall_resolve_name("clone3");
    if (clone3 != __NR_SCMP_ERROR) {
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), clone3, 0);
        if (rc < 0) return make_error(rc, "seccomp_rule_add(clone3)");
    }
    // bpf: only element operations on maps ztproxy already holds (admission rules change on
    // reload; counters are read). Loading programs or creating maps is over once serving.
    for (int cmd : {BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY,
                    BPF_OBJ_GET_INFO_BY_FD})
        if (auto r = allow(ctx, "bpf", {SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(cmd))}); !r) return r;
    return {};
}

}  // namespace

Result<SeccompFilter> SeccompFilter::build(Violation violation) {
    // KILL_PROCESS, not KILL_THREAD: a worker killed alone would leave its connections hanging
    // in a process that still looks alive; a dead process is restarted by its supervisor
    // (systemd's Restart=, Kubernetes), and the kernel logs the call (audit type=1326, syscall=N).
    // Not ERRNO: code that gets EPERM where it never expects one fails in ways no one can debug,
    // and an attacker gets to probe. `seccomp = "log"` is the mode for finding what is missing.
    const uint32_t action = violation == Violation::kill ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_LOG;
    Ctx ctx(seccomp_init(action));
    if (!ctx) return Error{ENOMEM, "seccomp_init"};
    // A call through another ABI (int 0x80 on x86-64, x32) would bypass the native syscall
    // numbers; libseccomp checks the architecture first, and such a call always kills.
    int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    // Every thread that exists gets the filter at once (`ztproxy demo` runs its backend thread
    // already); threads created later (workers, admin) inherit it.
    if (rc == 0) rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_TSYNC, 1);
    if (rc < 0) return make_error(rc, "seccomp_attr_set");
    for (const char* name : kAllowed)
        if (auto r = allow(ctx.get(), name); !r) return r.error();
    if (auto r = add_conditional_rules(ctx.get()); !r) return r.error();
    return SeccompFilter(std::move(ctx));
}

Result<void> SeccompFilter::install() {
    int rc = seccomp_load(ctx_.get());
    if (rc < 0) return make_error(rc, "seccomp_load");
    return {};
}

Result<void> SeccompFilter::export_bpf(int fd) const {
    int rc = seccomp_export_bpf(ctx_.get(), fd);
    if (rc < 0) return make_error(rc, "seccomp_export_bpf");
    return {};
}

std::vector<std::string> SeccompFilter::unknown_syscalls() {
    std::vector<std::string> out;
    for (const char* name : kAllowed)
        if (seccomp_syscall_resolve_name(name) == __NR_SCMP_ERROR) out.emplace_back(name);
    return out;
}

bool apply_seccomp(config::SeccompMode mode) {
    if (mode == config::SeccompMode::off) {
        log::main().warn("seccomp is off ([process] seccomp = \"off\"): every system call stays available");
        return true;
    }
    const bool log_only = mode == config::SeccompMode::log;
    auto filter = SeccompFilter::build(log_only ? SeccompFilter::Violation::log : SeccompFilter::Violation::kill);
    Result<void> loaded = filter ? filter->install() : Result<void>(filter.error());
    if (!loaded) {
        // EINVAL/ENOSYS: a kernel built without CONFIG_SECCOMP_FILTER (or a sandbox refusing
        // it). Only `auto` may go on without the filter.
        const int code = loaded.error().code;
        if (mode == config::SeccompMode::automatic && (code == EINVAL || code == ENOSYS)) {
            log::main().warn("seccomp is not available here ({}): running without the system-call filter",
                             loaded.error().message());
            return true;
        }
        log::main().error("cannot install the seccomp filter: {}", loaded.error().message());
        return false;
    }
    if (log_only)
        log::main().warn("seccomp in log mode: calls outside the allow-list run and are logged by the kernel "
                         "(dmesg / journal: audit type=1326)");
    else
        log::main().info("seccomp filter installed: calls outside the allow-list kill the process");
    return true;
}

}  // namespace ztp::app
