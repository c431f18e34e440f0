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
    return AdminRequest{std::string(method), std::string(path)};
}

}  // namespace ztp::app
