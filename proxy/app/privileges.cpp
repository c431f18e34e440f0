#include "proxy/app/privileges.hpp"

#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "proxy/base/c_deleters.hpp"
#include "proxy/base/log.hpp"

namespace ztp::app {

namespace {

using CapPtr = std::unique_ptr<std::remove_pointer_t<cap_t>, CDeleter<cap_free>>;
using CapText = std::unique_ptr<char, CDeleter<cap_free>>;

bool numeric(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The user database through NSS (files, LDAP, systemd's DynamicUser): getpwnam_r and friends,
// with a buffer that grows on ERANGE.
template <typename Entry, typename Lookup>
bool lookup(Lookup fn, Entry& out, std::vector<char>& buf, int* err) {
    buf.resize(4096);
    for (;;) {
        Entry* found = nullptr;
        *err = fn(&out, buf.data(), buf.size(), &found);
        if (*err == ERANGE && buf.size() < (1u << 20)) {
            buf.resize(buf.size() * 2);
            continue;
        }
        return found != nullptr;
    }
}

std::string not_found(const char* what, const std::string& name, int err) {
    std::string s = std::string(what) + " '" + name + "' does not exist on this host";
    if (err != 0) s += std::string(" (") + std::strerror(err) + ")";
    return s;
}

bool has_capabilities() {
    CapPtr current(cap_get_proc());
    CapPtr none(cap_init());
    return !current || !none || cap_compare(current.get(), none.get()) != 0;
}

size_t thread_count() {
    std::unique_ptr<DIR, CDeleter<closedir>> dir(::opendir("/proc/self/task"));
    if (!dir) return 0;
    size_t n = 0;
    while (dirent* e = ::readdir(dir.get()))
        if (e->d_name[0] != '.') ++n;
    return n;
}

// The bounding set limits what an execve could ever grant. ztproxy execs nothing and
// no_new_privs already forbids gaining privileges through exec, so this is depth, not the wall;
// it needs CAP_SETPCAP, which is why it runs before the uid change takes every capability.
Result<void> drop_bounding_set() {
    CapPtr current(cap_get_proc());
    cap_flag_value_t setpcap = CAP_CLEAR;
    if (!current || cap_get_flag(current.get(), CAP_SETPCAP, CAP_EFFECTIVE, &setpcap) != 0 || setpcap != CAP_SET)
        return {};  // e.g. started without it by systemd's CapabilityBoundingSet=: nothing to do here
    for (cap_value_t c = 0; c < cap_max_bits(); ++c)
        if (cap_get_bound(c) > 0 && cap_drop_bound(c) != 0) return errno_error("PR_CAPBSET_DROP");
    return {};
}

Result<void> switch_user(const Identity& who) {
    // Supplementary groups first, while still root: the user's own (e.g. ssl-cert, for keys under
    // /etc/ssl/private), as login and systemd's User= would set them; just the gid for an id
    // without a database entry.
    int rc = who.user.front() == '#' ? ::setgroups(1, &who.gid) : ::initgroups(who.user.c_str(), who.gid);
    if (rc != 0) return errno_error("setgroups");
    // setres[ug]id sets real, effective and saved ids at once (nothing to switch back to). glibc
    // runs them on every thread of the process (the kernel's credentials are per thread).
    if (::setresgid(who.gid, who.gid, who.gid) != 0) return errno_error("setresgid");
    if (::setresuid(who.uid, who.uid, who.uid) != 0) return errno_error("setresuid");
    uid_t r = 0, e = 0, s = 0;
    gid_t gr = 0, ge = 0, gs = 0;
    if (::getresuid(&r, &e, &s) != 0 || r != who.uid || e != who.uid || s != who.uid)
        return Error{EPERM, "setresuid did not change every user id"};
    if (::getresgid(&gr, &ge, &gs) != 0 || gr != who.gid || ge != who.gid || gs != who.gid)
        return Error{EPERM, "setresgid did not change every group id"};
    // The classic privilege-separation check: a drop that can be undone is no drop.
    if (::setuid(0) == 0) return Error{EPERM, "root could be regained after setresuid"};
    return {};
}

}  // namespace

// Session keys and plaintext live in this process's memory: never write them to a core file,
// never let another process of the same user ptrace or read /proc/PID/mem, and never gain
// privileges through exec (ztproxy execs nothing).
void harden_process() {
    rlimit none{0, 0};
    if (::setrlimit(RLIMIT_CORE, &none) != 0) log::main().warn("cannot disable core dumps: {}", std::strerror(errno));
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) log::main().warn("PR_SET_DUMPABLE: {}", std::strerror(errno));
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) log::main().warn("PR_SET_NO_NEW_PRIVS: {}", std::strerror(errno));
}

std::optional<Identity> resolve_identity(const config::Process& process, std::string* why) {
    why->clear();
    if (process.user.empty()) return std::nullopt;
    Identity id;
    std::vector<char> buf;
    passwd pw{};
    int err = 0;
    bool have_primary = false;
    if (numeric(process.user)) {
        id.uid = static_cast<uid_t>(std::stoul(process.user));
        id.user = "#" + process.user;
        if (lookup(
                [&](passwd* out, char* b, size_t n, passwd** f) { return ::getpwuid_r(id.uid, out, b, n, f); }, pw,
                buf, &err)) {
            id.user = pw.pw_name;
            id.gid = pw.pw_gid;
            have_primary = true;
        }
    } else if (lookup(
                   [&](passwd* out, char* b, size_t n, passwd** f) {
                       return ::getpwnam_r(process.user.c_str(), out, b, n, f);
                   },
                   pw, buf, &err)) {
        id.uid = pw.pw_uid;
        id.gid = pw.pw_gid;
        id.user = pw.pw_name;
        have_primary = true;
    } else {
        *why = not_found("user", process.user, err);
        return std::nullopt;
    }
    group gr{};
    if (!process.group.empty()) {
        if (numeric(process.group)) {
            id.gid = static_cast<gid_t>(std::stoul(process.group));
        } else if (lookup(
                       [&](group* out, char* b, size_t n, group** f) {
                           return ::getgrnam_r(process.group.c_str(), out, b, n, f);
                       },
                       gr, buf, &err)) {
            id.gid = gr.gr_gid;
        } else {
            *why = not_found("group", process.group, err);
            return std::nullopt;
        }
    } else if (!have_primary) {
        *why = "user id " + process.user + " has no entry in the user database: set 'group' too";
        return std::nullopt;
    }
    id.group = "#" + std::to_string(id.gid);
    if (lookup([&](group* out, char* b, size_t n, group** f) { return ::getgrgid_r(id.gid, out, b, n, f); }, gr,
               buf, &err))
        id.group = gr.gr_name;
    if (id.uid == 0 || id.gid == 0) {
        *why = "user '" + id.user + "' / group '" + id.group + "' is root: dropping to root keeps every privilege";
        return std::nullopt;
    }
    return id;
}

Result<void> drop_privileges(const std::optional<Identity>& who) {
    if (!who && ::geteuid() == 0) {
        log::main().warn("running as root with every privilege: set [process] user to drop them after start");
        return {};
    }
    if (!who && has_capabilities() && thread_count() > 1)
        return Error{EBUSY, "capabilities cannot be dropped once threads run (each thread has its own)"};
    if (auto r = drop_bounding_set(); !r) return r;
    if (who) {
        if (auto r = switch_user(*who); !r) return r;
    }
    // A uid change away from root clears the capability sets already; a non-root start with
    // capabilities (systemd's AmbientCapabilities=, a container's cap_add) still holds them.
    // Clearing never needs privilege. Ambient first: a capability cannot stay ambient once it is
    // no longer permitted, and EINVAL only means a kernel without ambient capabilities (< 4.3).
    if (cap_reset_ambient() != 0 && errno != EINVAL) return errno_error("PR_CAP_AMBIENT_CLEAR_ALL");
    CapPtr none(cap_init());
    if (!none || cap_set_proc(none.get()) != 0) return errno_error("cap_set_proc");
    if (has_capabilities()) return Error{EPERM, "capabilities are still held after dropping them"};
    return {};
}

std::string describe_credentials() {
    std::string caps = "unknown";
    if (CapPtr current{cap_get_proc()}) {
        if (!has_capabilities()) {
            caps = "none";
        } else if (CapText text{cap_to_text(current.get(), nullptr)}) {
            caps = text.get();
        }
    }
    int groups = ::getgroups(0, nullptr);
    return "uid=" + std::to_string(::geteuid()) + " gid=" + std::to_string(::getegid()) +
           " supplementary_groups=" + std::to_string(std::max(groups, 0)) + " capabilities=" + caps;
}

}  // namespace ztp::app
