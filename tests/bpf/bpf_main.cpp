// main() for bpf_tests. Where this process may not load BPF programs (not root, no CAP_BPF,
// kernel.unprivileged_bpf_disabled, seccomp, lockdown) the binary exits 77 (CTest: skipped) with
// the reason. Any other load failure (a verifier rejection) is a real failure: the tests run and say so.
#include <cerrno>
#include <cstdio>

#include <gtest/gtest.h>

#include "bpf/admission.hpp"

int main(int argc, char** argv) {
    testing::InitGoogleTest(&argc, argv);
    // Test discovery (gtest_discover_tests) lists tests at build time: always allowed.
    if (GTEST_FLAG_GET(list_tests)) return RUN_ALL_TESTS();
    auto probe = ztp::bpf::Admission::load({});
    if (!probe) {
        const int e = probe.error().code;
        if (e == EPERM || e == EACCES || e == ENOSYS) {
            std::fprintf(stderr, "SKIP: BPF programs cannot be loaded here (%s); run as root or with CAP_BPF\n",
                         probe.error().message().c_str());
            return 77;
        }
    }
    return RUN_ALL_TESTS();
}
