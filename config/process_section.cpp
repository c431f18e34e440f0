#include "config/process_section.hpp"

#include <algorithm>

namespace ztp::config::detail {

namespace {

constexpr std::string_view kProcess = "[process]";

bool all_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The portable user/group name characters (POSIX plus '-' and '.'), as shadow's useradd accepts.
bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
}

}  // namespace

std::string identity_problem(std::string_view key, std::string_view value) {
    const std::string k = "'" + std::string(key) + "'";
    if (value.empty()) return k + " must not be empty";
    if (all_digits(value)) {
        // uid_t/gid_t are 32 bits; (uid_t)-1 means "unchanged" to setresuid and is no identity.
        if (value.size() > 10 || std::stoull(std::string(value)) >= 4294967295ull)
            return k + " " + std::string(value) + " is not a valid id (0 to 4294967294)";
        if (std::stoull(std::string(value)) == 0)
            return k + " must not be root: dropping to root keeps every privilege";
        return {};
    }
    if (value.size() > 32) return k + " must be at most 32 characters";
    if (value.front() == '-' || !std::all_of(value.begin(), value.end(), name_char))
        return k + " '" + std::string(value) + "' is not a user or group name (letters, digits, '_', '-', '.')";
    if (value == "root") return k + " must not be root: dropping to root keeps every privilege";
    return {};
}

void read_process(TomlReader& r, const toml::table& t, Process& out) {
    out.loc = r.loc(t.source());
    r.check_keys(t, {"user", "group", "seccomp"}, kProcess);
    for (auto [key, field] : {std::pair{"user", &out.user}, std::pair{"group", &out.group}}) {
        auto v = r.string(t, key, kProcess);
        if (!v) continue;
        if (auto why = identity_problem(key, *v); !why.empty())
            r.error(t.get(key)->source(), why);
        else
            *field = *v;
    }
    // setgroups/setgid are only worth doing together with setuid: a process that stays root can
    // switch its groups back at will.
    if (t.contains("group") && !t.contains("user"))
        r.error(t.get("group")->source(), "'group' needs 'user' (groups change only together with the user)");
    if (auto v = r.string(t, "seccomp", kProcess)) {
        if (*v == "auto") out.seccomp = SeccompMode::automatic;
        else if (*v == "require") out.seccomp = SeccompMode::require;
        else if (*v == "log") out.seccomp = SeccompMode::log;
        else if (*v == "off") out.seccomp = SeccompMode::off;
        else r.error(t.get("seccomp")->source(), "'seccomp' must be \"auto\", \"require\", \"log\" or \"off\"");
    }
}

}  // namespace ztp::config::detail
