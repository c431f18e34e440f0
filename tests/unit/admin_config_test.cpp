// The [admin] section and the bearer token file: every key read from a policy, the token file's
// rules, and that no message ever carries the token (bad values are covered by the fixtures in
// tests/fixtures/policies/bad/admin_*.toml).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "config/admin_token.hpp"
#include "config/policy_loader.hpp"

namespace ztp::config {
namespace {

namespace fs = std::filesystem;

const fs::path kGood = fs::path(ZTP_SOURCE_DIR) / "tests/fixtures/policies/good";

class TokenFile : public testing::Test {
protected:
    std::string write(const std::string& bytes) {
        std::ofstream(path_, std::ios::binary) << bytes;
        return path_.string();
    }
    void TearDown() override { fs::remove(path_); }
    fs::path path_ = fs::temp_directory_path() / ("ztp-admin-token-" + std::to_string(::getpid()));
};

TEST(AdminSection, ReadsEveryKey) {
    auto outcome = load_policy_file((kGood / "admin.toml").string());
    ASSERT_TRUE(outcome.policy) << (outcome.problems.empty() ? "" : outcome.problems[0].str());
    const Admin& a = outcome.policy->admin;
    ASSERT_TRUE(a.address);
    EXPECT_EQ(a.address->to_string(), "127.0.0.1:9901");
    EXPECT_EQ(a.unix_socket, "/run/ztproxy/admin.sock");
    EXPECT_EQ(a.unix_socket_mode, 0660u);
    EXPECT_EQ(a.token_file, (kGood / "admin.token").string());
    EXPECT_EQ(a.token, "e2f1c0ffee5ca1ab1e0ddba11deadbeef");
    EXPECT_TRUE(a.metrics_require_token);
    EXPECT_EQ(a.max_connections, 16u);
    EXPECT_EQ(a.max_request_bytes, 4096u);
    EXPECT_EQ(a.request_timeout, std::chrono::milliseconds(1500));
}

TEST(AdminSection, DefaultsKeepTheEndpointOffAndOpenOnlyWhereBound) {
    Admin a;
    EXPECT_FALSE(a.address);
    EXPECT_TRUE(a.unix_socket.empty());
    EXPECT_TRUE(a.token.empty());
    EXPECT_EQ(a.unix_socket_mode, 0600u);
    EXPECT_EQ(a.max_connections, 64u);
    EXPECT_EQ(a.max_request_bytes, 8192u);
    EXPECT_EQ(a.request_timeout, std::chrono::milliseconds(2000));
}

TEST_F(TokenFile, TrailingLineBreaksAreNotPartOfTheToken) {
    std::string why;
    EXPECT_EQ(read_admin_token(write("0123456789abcdef0123\n"), &why), "0123456789abcdef0123");
    EXPECT_EQ(read_admin_token(write("0123456789abcdef0123\r\n"), &why), "0123456789abcdef0123");
}

TEST_F(TokenFile, RefusesWhatCannotBeAToken) {
    const std::string secret = "s3cr3t-s3cr3t";
    struct Case {
        std::string bytes;
        std::string why;
    } cases[] = {
        {"", "is empty"},
        {"\n\n", "is empty"},
        {secret + "\n", "the token is shorter than 16 characters (e.g. `openssl rand -hex 32`)"},
        {secret + " " + secret, "must hold one line of visible ASCII characters (the token)"},
        {secret + secret + "\nsecond line", "must hold one line of visible ASCII characters (the token)"},
        {std::string(kMaxAdminToken + 1, 'a'), "is longer than 4096 bytes (one line: the token)"},
    };
    for (const auto& c : cases) {
        std::string why;
        EXPECT_FALSE(read_admin_token(write(c.bytes), &why)) << c.bytes;
        EXPECT_EQ(why, c.why);
        EXPECT_EQ(why.find(secret), std::string::npos) << "the message quotes the file: " << why;
    }
}

TEST_F(TokenFile, AFifoIsRefusedWithoutWaitingForAWriter) {
    ASSERT_EQ(::mkfifo(path_.c_str(), 0600), 0);
    std::string why;
    EXPECT_FALSE(read_admin_token(path_.string(), &why));
    EXPECT_EQ(why, "is not a regular file");
}

TEST_F(TokenFile, AMissingFileSaysWhy) {
    std::string why;
    EXPECT_FALSE(read_admin_token(path_.string() + ".absent", &why));
    EXPECT_EQ(why, "cannot open: No such file or directory");
}

}  // namespace
}  // namespace ztp::config
