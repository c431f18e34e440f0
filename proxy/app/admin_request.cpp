#include "proxy/app/admin_request.hpp"

namespace ztp::app {

namespace {

constexpr size_t kMaxMethod = 16;
constexpr size_t kMaxPath = 1024;

bool is_method(std::string_view m) {
    if (m.empty() || m.size() > kMaxMethod) return false;
    for (char c : m)
        if (c < 'A' || c > 'Z') return false;
    return true;
}

// Printable ASCII without spaces: what a request target may contain (RFC 9112 §3.2, no fragment).
bool is_target(std::string_view t) {
    if (t.empty() || t.size() > kMaxPath || t.front() != '/') return false;
    for (char c : t)
        if (c <= 0x20 || c >= 0x7f || c == '#') return false;
    return true;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool equals_ignoring_case(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

}  // namespace

std::optional<AdminRequest> parse_admin_request(std::string_view head) {
    const size_t line_end = head.find("\r\n");
    if (line_end == std::string_view::npos) return std::nullopt;
    const std::string_view line = head.substr(0, line_end);
    const size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) return std::nullopt;
    const size_t sp2 = line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) return std::nullopt;
    const std::string_view method = line.substr(0, sp1);
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (!is_method(method) || !is_target(target)) return std::nullopt;
    if (version != "HTTP/1.0" && version != "HTTP/1.1") return std::nullopt;
    const std::string_view path = target.substr(0, target.find('?'));
    AdminRequest request{std::string(method), std::string(path), std::nullopt};
    // Header lines up to the blank line; only Authorization is read.
    std::string_view rest = head.substr(line_end + 2);
    for (;;) {
        const size_t end = rest.find("\r\n");
        if (end == std::string_view::npos || end == 0) break;
        const std::string_view field = rest.substr(0, end);
        rest.remove_prefix(end + 2);
        const size_t colon = field.find(':');
        if (colon == std::string_view::npos || !equals_ignoring_case(field.substr(0, colon), "authorization"))
            continue;
        if (request.authorization) return std::nullopt;
        request.authorization = std::string(trim(field.substr(colon + 1)));
    }
    return request;
}

std::optional<std::string_view> bearer_token(std::string_view authorization) {
    constexpr std::string_view kScheme = "bearer";
    if (authorization.size() <= kScheme.size() || !equals_ignoring_case(authorization.substr(0, kScheme.size()), kScheme) ||
        authorization[kScheme.size()] != ' ')
        return std::nullopt;
    const std::string_view token = trim(authorization.substr(kScheme.size() + 1));
    if (token.empty()) return std::nullopt;
    return token;
}

}  // namespace ztp::app
