// The policy loader against the fixtures in tests/fixtures/policies. Each bad fixture starts with
// one "# expect: line:col: message" comment per expected problem, in report order; the e2e test
// (tests/e2e/test_check.py) reads the same lines, so the two cannot drift apart.
#include "config/policy_loader.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace ztp::config {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(ZTP_SOURCE_DIR) / "tests/fixtures/policies";

std::vector<std::string> fixture_names(const char* dir) {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(kFixtures / dir, ec))
        if (e.path().extension() == ".toml") names.push_back(e.path().stem().string());
    std::sort(names.begin(), names.end());
    return names;
}

std::vector<std::string> expectations(const fs::path& file) {
    std::vector<std::string> out;
    std::ifstream in(file);
    const std::string prefix = "# expect: ";
    for (std::string line; std::getline(in, line) && line.rfind(prefix, 0) == 0;)
        out.push_back(line.substr(prefix.size()));
    return out;
}

std::vector<std::string> messages(const std::vector<Diagnostic>& ds) {
    std::vector<std::string> out;
    for (const auto& d : ds) out.push_back(d.str());
    return out;
}

std::string test_name(const testing::TestParamInfo<std::string>& info) {
    std::string n = info.param;
    std::replace_if(
        n.begin(), n.end(), [](char c) { return !isalnum(static_cast<unsigned char>(c)); }, '_');
    return n;
}

class BadPolicy : public testing::TestWithParam<std::string> {};

TEST_P(BadPolicy, ReportsExactlyTheExpectedProblems) {
    const std::string path = (kFixtures / "bad" / (GetParam() + ".toml")).string();
    auto expected = expectations(path);
    ASSERT_FALSE(expected.empty()) << path << " has no '# expect: line:col: message' header";
    for (auto& e : expected) e = path + ":" + e;

    auto outcome = load_policy_file(path);
    EXPECT_FALSE(outcome.policy.has_value());
    EXPECT_EQ(messages(outcome.problems), expected);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BadPolicy, testing::ValuesIn(fixture_names("bad")), test_name);

class GoodPolicy : public testing::TestWithParam<std::string> {};

TEST_P(GoodPolicy, LoadsWithoutProblems) {
    const std::string path = (kFixtures / "good" / (GetParam() + ".toml")).string();
    auto outcome = load_policy_file(path);
    EXPECT_EQ(messages(outcome.problems), std::vector<std::string>{});
    ASSERT_TRUE(outcome.policy.has_value());
    EXPECT_EQ(outcome.policy->source, path);
    // Whatever the loader accepts, validate_policy must accept too (quick mode relies on it).
    EXPECT_EQ(messages(validate_policy(*outcome.policy)), std::vector<std::string>{});
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoodPolicy, testing::ValuesIn(fixture_names("good")), test_name);

TEST(PolicyFixtures, EnoughCoverage) {
    EXPECT_GE(fixture_names("bad").size(), 15u);
    EXPECT_GE(fixture_names("good").size(), 3u);
}

TEST(PolicyLoader, MinimalGetsDefaults) {
    auto outcome = load_policy_file((kFixtures / "good/minimal.toml").string());
    ASSERT_TRUE(outcome.policy);
    const Policy& p = *outcome.policy;
    EXPECT_EQ(p.runtime.workers, 0u);
    EXPECT_EQ(p.logging.level, "info");
    EXPECT_EQ(p.logging.format, LogFormat::text);
    EXPECT_TRUE(p.logging.access_log);
    EXPECT_EQ(p.limits.max_connections, 10000u);
    EXPECT_EQ(p.limits.max_connections_per_source, 0u);
    EXPECT_EQ(p.limits.handshake_timeout, std::chrono::seconds(10));
    EXPECT_EQ(p.limits.idle_timeout, std::chrono::minutes(5));
    EXPECT_EQ(p.limits.backend_connect_timeout, std::chrono::seconds(5));
    EXPECT_EQ(p.limits.connection_buffer_bytes, 64u * 1024);
    EXPECT_EQ(p.process.user, "");
    EXPECT_EQ(p.process.group, "");
    EXPECT_EQ(p.process.seccomp, SeccompMode::automatic);
    ASSERT_EQ(p.listeners.size(), 1u);
    const Listener& l = p.listeners[0];
    EXPECT_EQ(l.name, "public");
    EXPECT_EQ(l.address.to_string(), "127.0.0.1:8443");
    EXPECT_EQ(l.tls.min_version, TlsVersion::tls1_2);
    EXPECT_EQ(l.tls.max_version, TlsVersion::tls1_3);
    EXPECT_EQ(l.tls.ciphers.size(), 3u);
    EXPECT_TRUE(l.tls.alpn.empty());
    EXPECT_TRUE(l.tls.session_tickets);
    EXPECT_EQ(l.tls.tls13_tickets, 1u);
    EXPECT_EQ(l.tls.default_certificate, "");
    EXPECT_EQ(l.tls.client_auth, ClientAuth::none);
    EXPECT_EQ(l.tls.client_ca, "");
    EXPECT_EQ(l.tls.verify_depth, 4u);
    ASSERT_EQ(l.tls.certificates.size(), 1u);
    EXPECT_EQ(l.tls.certificates[0].cert_file, (kFixtures / "good/certs/main.pem").string());
    EXPECT_EQ(l.tls.certificates[0].key_file, (kFixtures / "good/certs/main.key").string());
    EXPECT_EQ(l.loc.line, 2);
    EXPECT_EQ(l.loc.col, 1);
    EXPECT_EQ(l.tls.certificates[0].loc.line, 6);
    EXPECT_EQ(l.tls.certificates[0].loc.col, 3);
    ASSERT_EQ(p.backends.size(), 1u);
    ASSERT_EQ(p.backends[0].addresses.size(), 1u);
    EXPECT_EQ(p.backends[0].addresses[0].to_string(), "127.0.0.1:8080");
    EXPECT_EQ(p.backends[0].proxy_protocol, ProxyProtocol::off);
    ASSERT_EQ(p.routes.size(), 1u);
    EXPECT_TRUE(p.routes[0].is_default);
    EXPECT_EQ(p.routes[0].listener, "");
    EXPECT_EQ(p.routes[0].backend, "app");
}

TEST(PolicyLoader, FullReadsEveryKey) {
    auto outcome = load_policy_file((kFixtures / "good/full.toml").string());
    ASSERT_TRUE(outcome.policy) << messages(outcome.problems).front();
    const Policy& p = *outcome.policy;
    EXPECT_EQ(p.runtime.workers, 4u);
    EXPECT_EQ(p.logging.level, "debug");
    EXPECT_EQ(p.logging.format, LogFormat::json);
    EXPECT_FALSE(p.logging.access_log);
    EXPECT_EQ(p.limits.max_connections, 2048u);
    EXPECT_EQ(p.limits.max_connections_per_source, 64u);
    ASSERT_TRUE(p.admin.address);
    EXPECT_EQ(p.admin.address->to_string(), "127.0.0.1:9901");
    EXPECT_EQ(p.limits.handshake_timeout, std::chrono::milliseconds(2500));
    EXPECT_EQ(p.limits.idle_timeout, std::chrono::seconds(90));
    EXPECT_EQ(p.limits.backend_connect_timeout, std::chrono::seconds(3));
    EXPECT_EQ(p.limits.connection_buffer_bytes, 128u * 1024);
    EXPECT_EQ(p.process.user, "nobody");
    EXPECT_EQ(p.process.group, "65534");
    EXPECT_EQ(p.process.seccomp, SeccompMode::log);

    ASSERT_EQ(p.listeners.size(), 2u);
    const TlsSettings& tls = p.listeners[0].tls;
    EXPECT_EQ(p.listeners[0].address.to_string(), "0.0.0.0:8443");
    EXPECT_EQ(tls.min_version, TlsVersion::tls1_3);
    EXPECT_EQ(tls.max_version, TlsVersion::tls1_3);
    EXPECT_EQ(tls.ciphers, (std::vector<Cipher>{Cipher::chacha20_poly1305, Cipher::aes_256_gcm}));
    EXPECT_EQ(tls.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
    EXPECT_FALSE(tls.session_tickets);
    EXPECT_EQ(tls.tls13_tickets, 0u);
    EXPECT_EQ(tls.default_certificate, "other");
    ASSERT_EQ(tls.certificates.size(), 2u);
    EXPECT_EQ(tls.certificates[0].server_names, (std::vector<std::string>{"a.example.com", "*.example.com"}));
    EXPECT_EQ(tls.certificates[0].key_file, "/etc/ztproxy/keys/main.key");
    EXPECT_EQ(tls.certificates[1].cert_file, (kFixtures / "certs/other.pem").string());
    EXPECT_EQ(p.listeners[1].address.to_string(), "[::1]:9443");

    ASSERT_EQ(p.backends.size(), 2u);
    ASSERT_EQ(p.backends[0].addresses.size(), 2u);
    EXPECT_EQ(p.backends[0].addresses[1].to_string(), "[::1]:8080");
    ASSERT_EQ(p.routes.size(), 3u);
    EXPECT_EQ(p.routes[0].listener, "public");
    EXPECT_EQ(p.routes[0].server_names, (std::vector<std::string>{"a.example.com", "*.example.com"}));
    EXPECT_TRUE(p.routes[1].is_default);
    EXPECT_EQ(p.routes[2].server_names, std::vector<std::string>{"internal.example.com"});
}

TEST(PolicyLoader, InlineTablesAndIntegerSizes) {
    auto outcome = load_policy_file((kFixtures / "good/shared_routes.toml").string());
    ASSERT_TRUE(outcome.policy);
    const Policy& p = *outcome.policy;
    EXPECT_EQ(p.limits.connection_buffer_bytes, 16384u);
    EXPECT_EQ(p.listeners[0].address.to_string(), "0.0.0.0:443");
    EXPECT_EQ(p.listeners[0].tls.ciphers, std::vector<Cipher>{Cipher::aes_128_gcm});
    ASSERT_EQ(p.listeners[1].tls.certificates.size(), 1u);
    EXPECT_EQ(p.listeners[1].tls.certificates[0].key_file, (kFixtures / "good/c.key").string());
}

TEST(PolicyLoader, IdentityReadsClientAuthAndProxyProtocol) {
    auto outcome = load_policy_file((kFixtures / "good/identity.toml").string());
    ASSERT_TRUE(outcome.policy) << messages(outcome.problems).front();
    const Policy& p = *outcome.policy;
    ASSERT_EQ(p.listeners.size(), 2u);
    const TlsSettings& strict = p.listeners[0].tls;
    EXPECT_EQ(strict.client_auth, ClientAuth::require);
    EXPECT_EQ(strict.client_ca, (kFixtures / "good/certs/clients-ca.pem").string());  // like cert paths
    EXPECT_EQ(strict.client_ca_loc.line, 7);
    EXPECT_EQ(strict.client_ca_loc.col, 15);
    EXPECT_EQ(strict.verify_depth, 2u);
    const TlsSettings& partners = p.listeners[1].tls;
    EXPECT_EQ(partners.client_auth, ClientAuth::optional);
    EXPECT_EQ(partners.client_ca, "/etc/ztproxy/partners-ca.pem");
    EXPECT_EQ(partners.verify_depth, 4u);
    ASSERT_EQ(p.backends.size(), 2u);
    EXPECT_EQ(p.backends[0].proxy_protocol, ProxyProtocol::v2);
    EXPECT_EQ(p.backends[1].proxy_protocol, ProxyProtocol::off);
}

const char* kMinimal = R"(
[[listener]]
name = "l"
address = "127.0.0.1:1"
tls.certificate = [{ name = "c", cert = "certs/c.pem", key = "/abs/c.key" }]
[[backend]]
name = "b"
address = "127.0.0.1:2"
[[route]]
default = true
backend = "b"
)";

TEST(PolicyLoader, TextPathsResolveAgainstThePolicyDirectory) {
    auto outcome = load_policy_text(kMinimal, "conf/sub/../policy.toml");
    ASSERT_TRUE(outcome.policy);
    const Certificate& c = outcome.policy->listeners[0].tls.certificates[0];
    EXPECT_EQ(c.cert_file, (fs::current_path() / "conf/certs/c.pem").string());
    EXPECT_EQ(c.key_file, "/abs/c.key");

    outcome = load_policy_text(kMinimal, "policy.toml");
    ASSERT_TRUE(outcome.policy);
    EXPECT_EQ(outcome.policy->listeners[0].tls.certificates[0].cert_file,
              (fs::current_path() / "certs/c.pem").string());
}

TEST(PolicyLoader, ConnectionBufferBounds) {
    auto with_buffer = [](const std::string& value) {
        return load_policy_text("[limits]\nconnection_buffer = " + value + "\n" + kMinimal, "p.toml");
    };
    EXPECT_TRUE(with_buffer("4096").policy);
    EXPECT_TRUE(with_buffer("\"16MiB\"").policy);
    EXPECT_EQ(messages(with_buffer("4095").problems),
              std::vector<std::string>{"p.toml:2:21: 'connection_buffer' must be between 4KiB and 16MiB"});
    EXPECT_EQ(messages(with_buffer("-1").problems),
              std::vector<std::string>{"p.toml:2:21: 'connection_buffer' must be between 4KiB and 16MiB"});
    EXPECT_EQ(messages(with_buffer("\"16385k\"").problems),
              std::vector<std::string>{"p.toml:2:21: 'connection_buffer' must be between 4KiB and 16MiB"});
    EXPECT_EQ(
        messages(with_buffer("1.5").problems),
        std::vector<std::string>{"p.toml:2:21: 'connection_buffer': expected an integer or a size string "
                                 "such as \"64KiB\", got a float"});
}

TEST(PolicyLoader, ZeroTimeoutIsRejected) {
    auto outcome = load_policy_text(
        "[limits]\nidle_timeout = \"0s\"\nhandshake_timeout = 10\n" + std::string(kMinimal), "p.toml");
    EXPECT_EQ(
        messages(outcome.problems),
        (std::vector<std::string>{
            "p.toml:2:16: 'idle_timeout' must be greater than 0",
            "p.toml:3:21: 'handshake_timeout': expected a duration string such as \"10s\", got an integer",
        }));
}

TEST(PolicyLoader, BackendAddressRules) {
    auto load = [](const std::string& backend) {
        return messages(load_policy_text(R"(
[[listener]]
name = "l"
address = "127.0.0.1:1"
tls.certificate = [{ name = "c", cert = "c.pem", key = "c.key" }]
[[route]]
default = true
backend = "b"
[[backend]]
name = "b"
)" + backend,
                                         "p.toml")
                            .problems);
    };
    EXPECT_EQ(load("address = \"127.0.0.1:0\"\n"),
              std::vector<std::string>{
                  "p.toml:11:11: bad address '127.0.0.1:0': a backend needs a port other than 0"});
    EXPECT_EQ(load("address = \"127.0.0.1:1\"\naddresses = [\"127.0.0.1:2\"]\n"),
              std::vector<std::string>{"p.toml:11:11: use either 'address' or 'addresses', not both"});
    EXPECT_EQ(load("addresses = [\"127.0.0.1:2\", 3]\n"),
              std::vector<std::string>{"p.toml:11:29: 'addresses[1]': expected a string, got an integer"});
    EXPECT_EQ(load("addresses = [\"[::1]:443\", \"10.1.1.1:80\"]\n"), std::vector<std::string>{});
}

TEST(PolicyLoader, MissingFileAndDirectory) {
    auto outcome = load_policy_file("/nonexistent/ztproxy/policy.toml");
    EXPECT_FALSE(outcome.policy);
    EXPECT_EQ(
        messages(outcome.problems),
        std::vector<std::string>{
            "/nonexistent/ztproxy/policy.toml:1:1: cannot read policy file: No such file or directory"});
    outcome = load_policy_file(kFixtures.string());
    EXPECT_EQ(messages(outcome.problems),
              std::vector<std::string>{kFixtures.string() + ":1:1: cannot read policy file: is a directory"});
}

TEST(PolicyLoader, GarbageNeverThrows) {
    const std::string inputs[] = {
        std::string("\0\0\0", 3),
        "\xff\xfe\xfd",
        "[[[[[[[[",
        std::string(5000, '[') + std::string(5000, ']'),
        "a = " + std::string(10000, '[') + std::string(10000, ']'),
        "a = " + std::string(10000, '{'),
        "listener = 5\nbackend = \"x\"\nroute = [1, 2]\n",
        "[[listener]]\ntls = 3\n[[listener]]\ntls.certificate = [1]\n",
        "[[listener]]\ntls.certificate = []\n",
    };
    for (const auto& in : inputs) {
        LoadOutcome outcome;
        EXPECT_NO_THROW(outcome = load_policy_text(in, "g.toml"));
        EXPECT_FALSE(outcome.policy);
        EXPECT_FALSE(outcome.problems.empty());
        for (const auto& d : outcome.problems) EXPECT_EQ(d.loc.file, "g.toml");
    }
}

TEST(PolicyLoader, WrongShapesAreReportedAtTheValue) {
    auto outcome = load_policy_text(
        "listener = 5\nbackend = \"x\"\nroute = [1, {backend = \"b\", default = true}]\n", "s.toml");
    EXPECT_EQ(messages(outcome.problems),
              (std::vector<std::string>{
                  "s.toml:1:12: 'listener': expected an array of tables ([[listener]]), "
                  "got an integer",
                  "s.toml:2:11: 'backend': expected an array of tables ([[backend]]), "
                  "got a string",
                  "s.toml:3:10: 'route[0]': expected a table, got an integer",
                  "s.toml:3:13: route references unknown backend 'b'",
              }));
    outcome = load_policy_text(
        "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\ntls.certificate = []\n", "s.toml");
    EXPECT_EQ(messages(outcome.problems), (std::vector<std::string>{
                                              "s.toml:1:1: listener 'l' has no route",
                                              "s.toml:4:19: 'certificate' must list at least one certificate",
                                          }));
}

TEST(PolicyLoader, ServerNamesAreNormalisedAndChecked) {
    auto load = [](const std::string& names) {
        return load_policy_text(
            std::string(kMinimal) + "[[route]]\nserver_names = [" + names + "]\nbackend = \"b\"\n", "n.toml");
    };
    auto ok = load("\"API.Example.COM\", \"*.Example.com\", \"x_y-1.test\"");
    ASSERT_TRUE(ok.policy);
    EXPECT_EQ(ok.policy->routes[1].server_names,
              (std::vector<std::string>{"api.example.com", "*.example.com", "x_y-1.test"}));
    struct Case {
        const char* name;
        const char* why;
    };
    const Case cases[] = {
        {"", "must not be empty"},
        {"*", "'*' is only allowed as a leading '*.'"},
        {"*.", "nothing after '*.'"},
        {"*example.com", "'*' is only allowed as a leading '*.'"},
        {"*.*.example.com", "'*' is only allowed as a leading '*.'"},
        {"a..b", "empty label"},
        {".a", "empty label"},
        {"a.", "must not end with '.'"},
        {"a b", "unexpected character ' '"},
    };
    for (const auto& c : cases) {
        auto outcome = load(std::string("\"") + c.name + "\"");
        ASSERT_EQ(outcome.problems.size(), 1u) << c.name;
        EXPECT_EQ(outcome.problems[0].message, std::string("bad server name '") + c.name + "': " + c.why);
    }
}

TEST(PolicyLoader, CipherNamesAreCaseInsensitiveAndUnique) {
    auto load = [](const std::string& ciphers) {
        std::string text = kMinimal;
        text.replace(text.find("tls.certificate"), 0, "tls.ciphers = [" + ciphers + "]\n");
        return load_policy_text(text, "c.toml");
    };
    auto ok = load("\"aes-128-gcm\", \"Chacha20-Poly1305\"");
    ASSERT_TRUE(ok.policy);
    EXPECT_EQ(ok.policy->listeners[0].tls.ciphers,
              (std::vector<Cipher>{Cipher::aes_128_gcm, Cipher::chacha20_poly1305}));
    EXPECT_EQ(messages(load("\"AES-128-GCM\", \"aes-128-gcm\"").problems),
              std::vector<std::string>{"c.toml:5:31: cipher 'AES-128-GCM' listed twice"});
}

TEST(PolicyLoader, ProblemsAreSortedByPosition) {
    auto outcome = load_policy_file((kFixtures / "bad/many_problems.toml").string());
    ASSERT_GE(outcome.problems.size(), 2u);
    EXPECT_TRUE(
        std::is_sorted(outcome.problems.begin(), outcome.problems.end(),
                       [](const Diagnostic& a, const Diagnostic& b) { return a.loc.line < b.loc.line; }));
}

Policy builtin_policy() {
    Policy p;
    p.source = "<quick>";
    Listener l;
    l.name = "quick";
    l.address = *SocketAddress::parse("127.0.0.1:8443");
    Certificate cert;
    cert.name = "c";
    cert.cert_file = "/tmp/c.pem";
    cert.key_file = "/tmp/c.key";
    l.tls.certificates.push_back(cert);
    p.listeners.push_back(l);
    p.backends.push_back(Backend{"b", {*SocketAddress::parse("127.0.0.1:8080")}, {}});
    p.routes.push_back(Route{"", {}, true, "b", {}});
    return p;
}

TEST(ValidatePolicy, BuiltinPolicyIsValid) { EXPECT_TRUE(validate_policy(builtin_policy()).empty()); }

TEST(ValidatePolicy, EmptyPolicy) {
    Policy p;
    p.source = "<demo>";
    EXPECT_EQ(messages(validate_policy(p)),
              std::vector<std::string>{"<builtin>: no listener: at least one [[listener]] is required"});
}

TEST(ValidatePolicy, ChecksFieldsTheLoaderWouldHaveChecked) {
    Policy p = builtin_policy();
    p.listeners[0].tls.certificates.clear();
    p.listeners[0].tls.ciphers.clear();
    p.listeners[0].tls.alpn = {""};
    p.backends[0].addresses.clear();
    p.routes[0].backend.clear();
    EXPECT_EQ(messages(validate_policy(p)), (std::vector<std::string>{
                                                "<builtin>: listener 'quick' has no certificate",
                                                "<builtin>: listener 'quick' has no cipher",
                                                "<builtin>: 'alpn' entries must be 1 to 255 bytes long",
                                                "<builtin>: backend 'b' has no address",
                                                "<builtin>: route has no backend",
                                            }));
}

TEST(ValidatePolicy, ChecksTheProcessSection) {
    Policy p = builtin_policy();
    p.process.group = "0";
    EXPECT_EQ(messages(validate_policy(p)),
              (std::vector<std::string>{
                  "<builtin>: 'group' must not be root: dropping to root keeps every privilege",
                  "<builtin>: 'group' needs 'user' (groups change only together with the user)",
              }));
    p.process.user = "nobody";
    p.process.group = "nogroup";
    EXPECT_TRUE(validate_policy(p).empty());
}

TEST(ValidatePolicy, ClientAuthSettingsMustAgree) {
    Policy p = builtin_policy();
    p.listeners[0].tls.client_auth = ClientAuth::optional;
    p.listeners[0].tls.verify_depth = kMaxVerifyDepth + 1;
    p.listeners[0].tls.tls13_tickets = kMaxTls13Tickets + 1;
    p.listeners.push_back(builtin_policy().listeners[0]);
    p.listeners[1].name = "second";
    p.listeners[1].address = *SocketAddress::parse("127.0.0.1:9443");
    p.listeners[1].tls.client_ca = "/tmp/clients.pem";
    EXPECT_EQ(messages(validate_policy(p)),
              (std::vector<std::string>{
                  "<builtin>: listener 'quick': client_auth \"optional\" needs 'client_ca' (the CA bundle that "
                  "signs client certificates)",
                  "<builtin>: listener 'quick': 'verify_depth' must be at most 16",
                  "<builtin>: listener 'quick': 'tls13_tickets' must be at most 8",
                  "<builtin>: listener 'second': 'client_ca' is set but client_auth is \"none\" (set \"optional\" "
                  "or \"require\")",
              }));
    p.listeners[0].tls.client_ca = "/tmp/clients.pem";
    p.listeners[0].tls.verify_depth = kMaxVerifyDepth;
    p.listeners[0].tls.tls13_tickets = kMaxTls13Tickets;
    p.listeners[1].tls.client_auth = ClientAuth::require;
    EXPECT_EQ(messages(validate_policy(p)), std::vector<std::string>{});
}

TEST(ValidatePolicy, CollectsEverySemanticProblem) {
    Policy p = builtin_policy();
    p.listeners.push_back(p.listeners[0]);  // same name, same address
    p.listeners[0].tls.min_version = TlsVersion::tls1_3;
    p.listeners[0].tls.max_version = TlsVersion::tls1_2;
    p.listeners[0].tls.default_certificate = "nope";
    p.routes.push_back(Route{"quick", {"a.test"}, false, "missing", {}});
    p.routes.push_back(Route{"other", {"a.test"}, false, "b", {}});
    p.routes.push_back(Route{"", {"a.test"}, false, "b", {}});
    p.routes.push_back(Route{"quick", {}, true, "b", {}});
    EXPECT_EQ(messages(validate_policy(p)),
              (std::vector<std::string>{
                  "<builtin>: 'min_version' 1.3 is greater than 'max_version' 1.2",
                  "<builtin>: 'default_certificate' names unknown certificate 'nope'",
                  "<builtin>: duplicate listener name 'quick'",
                  "<builtin>: listener 'quick' has the same address 127.0.0.1:8443 as listener 'quick'",
                  "<builtin>: route references unknown backend 'missing'",
                  "<builtin>: route references unknown listener 'other'",
                  "<builtin>: server name 'a.test' is routed twice on listener 'quick'",
                  "<builtin>: more than one default route for listener 'quick'",
              }));
}

// [listener.admission] rate prefixes: read from the file, defaulted (/64, /32) without them, and
// checked by the validator for policies that did not come from a file (quick mode).
TEST(PolicyLoader, AdmissionRatePrefixes) {
    auto good = load_policy_file((kFixtures / "good/admission.toml").string());
    ASSERT_TRUE(good.policy);
    EXPECT_EQ(good.policy->listeners[0].admission.ipv6_rate_prefix, 56u);
    EXPECT_EQ(good.policy->listeners[0].admission.ipv4_rate_prefix, 24u);
    auto minimal = load_policy_file((kFixtures / "good/minimal.toml").string());
    ASSERT_TRUE(minimal.policy);
    EXPECT_EQ(minimal.policy->listeners[0].admission.ipv6_rate_prefix, 64u);
    EXPECT_EQ(minimal.policy->listeners[0].admission.ipv4_rate_prefix, 32u);

    Policy p = builtin_policy();
    p.listeners[0].admission.ipv6_rate_prefix = 129;
    p.listeners[0].admission.ipv4_rate_prefix = 8;
    EXPECT_EQ(messages(validate_policy(p)),
              (std::vector<std::string>{
                  "<builtin>: listener 'quick': admission 'ipv6_rate_prefix' must be between 32 and 128",
                  "<builtin>: listener 'quick': admission 'ipv4_rate_prefix' must be between 16 and 32",
              }));
}

// The admission tries hold kMaxAdmissionRules entries each (bpf/cidr.hpp): one more is a config
// error naming the list, never a silently truncated list in the kernel.
TEST(ValidatePolicy, AdmissionListsAreCappedAtTheTrieSize) {
    auto cidrs = [](const std::string& first, size_t n) {
        std::vector<bpf::Cidr> v;
        for (size_t i = 0; i < n; ++i)
            v.push_back(*bpf::Cidr::parse(first + "." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ".0/24"));
        return v;
    };
    Policy p = builtin_policy();
    p.listeners[0].admission.deny = cidrs("10", bpf::kMaxAdmissionRules);
    p.listeners[0].admission.allow = cidrs("11", bpf::kMaxAdmissionRules);
    EXPECT_EQ(messages(validate_policy(p)), std::vector<std::string>{});
    p.listeners[0].admission.deny = cidrs("10", bpf::kMaxAdmissionRules + 1);
    p.listeners[0].admission.allow.clear();
    EXPECT_EQ(messages(validate_policy(p)),
              std::vector<std::string>{"<builtin>: listener 'quick': more than 1024 'deny' entries"});
}

}  // namespace
}  // namespace ztp::config
