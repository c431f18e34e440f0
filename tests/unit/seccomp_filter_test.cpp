// The system-call allow-list: it builds, and, loaded in a forked child (death tests), it lets the
// proxy's calls through and kills the process on calls outside the list or with forbidden
// arguments. The e2e suites prove the list is complete on the real code paths.
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>

#include "proxy/app/seccomp_filter.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::app {
namespace {

using Violation = SeccompFilter::Violation;

// In the death-test child: load the filter, then run `call`; a call the filter allows ends the
// child with exit code 0.
template <typename Fn>
void under_filter(Violation v, Fn call) {
    auto filter = SeccompFilter::build(v);
    if (!filter || !filter->install()) std::_Exit(3);
    call();
    ::syscall(SYS_exit_group, 0);
}

TEST(SeccompFilter, BuildsAndExportsAProgram) {
    for (Violation v : {Violation::kill, Violation::log}) {
        auto filter = SeccompFilter::build(v);
        ASSERT_TRUE(filter) << filter.error().message();
        UniqueFd mem(::memfd_create("seccomp-bpf", MFD_CLOEXEC));
        ASSERT_TRUE(mem);
        ASSERT_TRUE(filter->export_bpf(mem.get()));
        const off_t size = ::lseek(mem.get(), 0, SEEK_END);
        EXPECT_GT(size, 8 * 50) << "fewer instructions than allowed calls";
        EXPECT_EQ(size % 8, 0) << "not a whole number of struct sock_filter";
    }
}

#if defined(__x86_64__)
TEST(SeccompFilter, EveryNameIsASystemCallOnX86_64) { EXPECT_EQ(SeccompFilter::unknown_syscalls(), std::vector<std::string>{}); }
#endif

TEST(SeccompFilterDeathTest, AllowsWhatTheProxyUses) {
    EXPECT_EXIT(under_filter(Violation::kill,
                             [] {
                                 // read-only open, a socket, a thread-style query, memory without exec
                                 int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
                                 int s = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
                                 void* m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                                 if (fd < 0 || s < 0 || m == MAP_FAILED || ::mprotect(m, 4096, PROT_READ) != 0) std::_Exit(4);
                                 ::close(fd);
                                 ::close(s);
                             }),
                testing::ExitedWithCode(0), "");
}

TEST(SeccompFilterDeathTest, KillsTheProcessOnACallOutsideTheList) {
    EXPECT_EXIT(under_filter(Violation::kill, [] { ::syscall(SYS_unshare, 0); }), testing::KilledBySignal(SIGSYS), "");
    EXPECT_EXIT(under_filter(Violation::kill, [] { ::syscall(SYS_io_uring_setup, 8, nullptr); }),
                testing::KilledBySignal(SIGSYS), "");
}

TEST(SeccompFilterDeathTest, KillsOnForbiddenArguments) {
    // fork is clone without CLONE_THREAD
    EXPECT_EXIT(under_filter(Violation::kill, [] { ::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0); }),
                testing::KilledBySignal(SIGSYS), "");
    EXPECT_EXIT(under_filter(Violation::kill, [] { ::open("/tmp/ztp-seccomp-test", O_WRONLY | O_CREAT, 0600); }),
                testing::KilledBySignal(SIGSYS), "");
    EXPECT_EXIT(under_filter(Violation::kill,
                             [] {
                                 void* m = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                                 ::mprotect(m, 4096, PROT_READ | PROT_EXEC);
                             }),
                testing::KilledBySignal(SIGSYS), "");
    EXPECT_EXIT(under_filter(Violation::kill, [] { ::socket(AF_NETLINK, SOCK_RAW, 0); }),
                testing::KilledBySignal(SIGSYS), "");
    EXPECT_EXIT(under_filter(Violation::kill, [] { ::syscall(SYS_bpf, 5 /* BPF_PROG_LOAD */, nullptr, 0); }),
                testing::KilledBySignal(SIGSYS), "");
}

TEST(SeccompFilterDeathTest, Clone3GetsEnosysSoThreadsFallBackToClone) {
    EXPECT_EXIT(under_filter(Violation::kill,
                             [] {
                                 errno = 0;
                                 if (::syscall(SYS_clone3, nullptr, 0) != -1 || errno != ENOSYS) std::_Exit(5);
                             }),
                testing::ExitedWithCode(0), "");
}

TEST(SeccompFilterDeathTest, LogModeLetsTheCallRun) {
    EXPECT_EXIT(under_filter(Violation::log, [] { ::syscall(SYS_unshare, 0); }), testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace ztp::app
