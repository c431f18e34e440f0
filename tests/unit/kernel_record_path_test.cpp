// crypto/kernel_record_path without a kTLS kernel: the fallback reason counted for each errno a
// kernel can answer a session's first TLS_RX/TLS_TX with (the kTLS tests cover the rest).
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>

#include "crypto/kernel_record_path.hpp"

namespace ztp::crypto {
namespace {

// The kernel's errno for a refused first TLS_RX/TLS_TX decides the counted fallback reason.
TEST(KtlsFallbackReason, CipherTheKernelCannotOffloadIsNotAnInstallFailure) {
    EXPECT_EQ(install_failure_reason(EINVAL), KtlsFallback::cipher_unsupported);  // unknown cipher/version
    EXPECT_EQ(install_failure_reason(ENOENT), KtlsFallback::cipher_unsupported);  // AEAD not available
    for (int e : {ENOMEM, EBUSY, ENOPROTOOPT, EMSGSIZE, EFAULT})
        EXPECT_EQ(install_failure_reason(e), KtlsFallback::install_failed) << std::strerror(e);
}

}  // namespace
}  // namespace ztp::crypto
