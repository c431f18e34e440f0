#include "config/admin_section.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "config/admin_token.hpp"
#include "config/units.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::config {

std::optional<std::string> read_admin_token(const std::string& path, std::string* why) {
    auto fail = [&](std::string message) -> std::optional<std::string> {
        *why = std::move(message);
        return std::nullopt;
    };
    // O_NONBLOCK: a FIFO or a device named by mistake must not hang `check` or a reload; only a
    // regular file (a Kubernetes Secret's symlink resolves to one) is read.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd) return fail(std::string("cannot open: ") + std::strerror(errno));
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) return fail(std::string("cannot read: ") + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) return fail("is a directory");
    if (!S_ISREG(st.st_mode)) return fail("is not a regular file");
    std::string token(kMaxAdminToken + 2, '\0');
    size_t n = 0;
    while (n < token.size()) {
        const ssize_t r = ::read(fd.get(), token.data() + n, token.size() - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return fail(std::string("cannot read: ") + std::strerror(errno));
        if (r == 0) break;
        n += static_cast<size_t>(r);
    }
    token.resize(n);
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
    if (token.empty()) return fail("is empty");
    if (token.size() > kMaxAdminToken)
        return fail("is longer than " + std::to_string(kMaxAdminToken) + " bytes (one line: the token)");
    // Visible ASCII only: what an Authorization header can carry unchanged (RFC 9110 token68 and
    // more), and no second line whose purpose would be a guess.
    for (char c : token)
        if (c < 0x21 || c > 0x7e) return fail("must hold one line of visible ASCII characters (the token)");
    if (token.size() < kMinAdminToken)
        return fail("the token is shorter than " + std::to_string(kMinAdminToken) +
                    " characters (e.g. `openssl rand -hex 32`)");
    return token;
}

namespace detail {

namespace {

constexpr std::string_view kAdmin = "[admin]";

// A non-empty string at `key`, resolved against the policy's directory.
std::optional<std::string> path_value(TomlReader& r, const toml::table& t, std::string_view key,
                                      const std::string& base_dir) {
    auto v = r.name(t, key, kAdmin, false);
    if (!v) return std::nullopt;
    return resolve_path(base_dir, *v);
}

}  // namespace

void read_admin(TomlReader& r, const toml::table& t, const std::string& base_dir, Admin& out) {
    out.loc = r.loc(t.source());
    r.check_keys(t,
                 {"address", "unix_socket", "unix_socket_mode", "token_file", "metrics_require_token",
                  "max_connections", "max_request", "request_timeout"},
                 kAdmin);
    auto at = [&](std::string_view key) -> const toml::source_region& { return t.get(key)->source(); };
    if (auto s = r.string(t, "address", kAdmin)) {
        std::string why;
        if (auto a = SocketAddress::parse(*s, &why))
            out.address = *a;
        else
            r.error(at("address"), "bad address " + in_quotes(*s) + ": " + why);
    }
    if (auto p = path_value(r, t, "unix_socket", base_dir)) {
        if (p->size() >= sizeof(sockaddr_un{}.sun_path))
            r.error(at("unix_socket"), "'unix_socket' path is longer than " +
                                           std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes");
        else
            out.unix_socket = *p;
    }
    // Owner only, or owner and group: a socket anyone on the host can connect to would be the
    // open TCP port again.
    if (auto i = r.choice(t, "unix_socket_mode", kAdmin, {"0600", "0660"})) {
        out.unix_socket_mode = *i == 0 ? 0600 : 0660;
        if (!t.contains("unix_socket")) r.error(at("unix_socket_mode"), "'unix_socket_mode' needs 'unix_socket'");
    }
    if (auto p = path_value(r, t, "token_file", base_dir)) {
        std::string why;
        if (auto token = read_admin_token(*p, &why)) {
            out.token_file = *p;
            out.token = std::move(*token);
        } else {
            r.error(at("token_file"), "'token_file': " + why);
        }
    }
    if (auto v = r.boolean(t, "metrics_require_token", kAdmin)) {
        out.metrics_require_token = *v;
        if (*v && !t.contains("token_file"))
            r.error(at("metrics_require_token"), "'metrics_require_token' needs 'token_file'");
    }
    if (auto v = r.integer(t, "max_connections", kAdmin)) {
        if (*v < 1 || *v > 4096)
            r.error(at("max_connections"), "'max_connections' must be between 1 and 4096");
        else
            out.max_connections = static_cast<uint32_t>(*v);
    }
    if (const toml::node* n = r.get(t, "max_request", kAdmin, false)) {
        std::optional<uint64_t> bytes;
        std::string why = "must be an integer or a size string such as \"8KiB\"";
        if (auto* i = n->as_integer(); i && i->get() >= 0) bytes = static_cast<uint64_t>(i->get());
        else if (auto* s = n->as_string()) bytes = parse_size(s->get(), &why);
        if (!bytes)
            r.error(n->source(), "bad size for 'max_request': " + why);
        else if (*bytes < 1024 || *bytes > 64 * 1024)
            r.error(n->source(), "'max_request' must be between 1KiB and 64KiB");
        else
            out.max_request_bytes = static_cast<uint32_t>(*bytes);
    }
    if (const toml::node* n = r.get(t, "request_timeout", kAdmin, false)) {
        std::string why = "must be a duration string such as \"2s\"";
        std::optional<std::chrono::milliseconds> d;
        if (auto* s = n->as_string()) d = parse_duration(s->get(), &why);
        if (!d)
            r.error(n->source(), "bad duration for 'request_timeout': " + why);
        else if (d->count() <= 0 || *d > std::chrono::seconds(60))
            r.error(n->source(), "'request_timeout' must be greater than 0 and at most 60s");
        else
            out.request_timeout = *d;
    }
}

}  // namespace detail

}  // namespace ztp::config
