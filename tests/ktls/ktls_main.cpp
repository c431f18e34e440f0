// main() for ktls_tests. On a kernel without kTLS the binary exits 77 (CTest: skipped) with the
// reason, like the kernel's own selftests. Inside the kTLS VM (KTLS_VM_GUEST set by
// tests/ktls/run-in-ktls-kernel.sh) the same situation is a failure: there, "skipped" would let a
// broken VM or module set-up pass CI without proving anything.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "crypto/ktls_sockopt.hpp"
#include "tests/ktls/ktls_test_util.hpp"

namespace {

constexpr int kSkip = 77;

// Empty when TCP_ULP "tls" attaches to a loopback socket, else why not.
std::string ktls_missing() {
    auto p = ztp::ktls_test::tcp_pair();
    if (!p.a) return "cannot create a loopback TCP pair";
    auto r = ztp::crypto::ktls_enable_ulp(p.a.get());
    return r ? std::string{} : r.error().message();
}

void print_stat_deltas(const std::map<std::string, long>& before, const std::map<std::string, long>& after) {
    std::printf("/proc/net/tls_stat deltas:");
    for (const auto& [name, v] : after) {
        auto it = before.find(name);
        const long d = v - (it == before.end() ? 0 : it->second);
        if (d != 0) std::printf(" %s%+ld", name.c_str(), d);
    }
    std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
    testing::InitGoogleTest(&argc, argv);
    // Test discovery (gtest_discover_tests) lists tests at build time on the host: always allowed.
    if (GTEST_FLAG_GET(list_tests)) return RUN_ALL_TESTS();

    const char* guest = std::getenv("KTLS_VM_GUEST");
    if (const std::string why = ktls_missing(); !why.empty()) {
        if (guest != nullptr && *guest != '\0') {
            std::fprintf(stderr,
                         "FAIL: running in the kTLS VM (KTLS_VM_GUEST=%s) but kTLS is unavailable: %s\n",
                         guest, why.c_str());
            return 1;
        }
        std::fprintf(stderr,
                     "SKIP: kTLS unavailable on this kernel (%s); run the 'ktls' tests through "
                     "tests/ktls/run-in-ktls-kernel.sh\n",
                     why.c_str());
        return kSkip;
    }
    const auto before = ztp::ktls_test::tls_stat();
    const int rc = RUN_ALL_TESTS();
    print_stat_deltas(before, ztp::ktls_test::tls_stat());
    return rc;
}
