// What the process may do, narrowed in two steps:
//
//   harden_process()        at start: no core dumps, not dumpable, no_new_privs
//   ... bind listeners, attach BPF programs: everything that needs privileges ...
//   drop_privileges(who)    then: [process] user/group, and every capability, for good
//
// drop_privileges must run while the process has one thread: capabilities and the bounding set
// belong to each thread, and only setuid/setgid (glibc signals every thread to repeat them) reach
// threads that already exist.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "config/policy.hpp"
#include "proxy/base/result.hpp"

namespace ztp::app {

void harden_process();

struct Identity {
    uid_t uid = 0;
    gid_t gid = 0;
    std::string user;   // the name, for initgroups and the log ("#65534" when it has none)
    std::string group;
};

// Looks up [process] user and group (names or numeric ids) in this host's user database.
// nullopt with *why when they do not resolve (or resolve to root); nullopt without a why when
// the policy names no user.
std::optional<Identity> resolve_identity(const config::Process& process, std::string* why);

// Switches to `who` (when given) with its supplementary groups, then drops every capability:
// effective, permitted, inheritable, ambient, and (where CAP_SETPCAP allows) the bounding set.
// Nothing ztproxy does after binding needs one: accepting on bound sockets, kTLS setsockopt and
// BPF map updates through already-open map fds are all unprivileged. (Map updates: verified after
// setresuid to nobody on 6.18 and on Debian's 6.1.176 with kernel.unprivileged_bpf_disabled=2.
// Older kernels, before the unprivileged check moved into map and program creation, refuse every
// bpf() command without CAP_BPF there: reloads then cannot change admission lists, and say so.)
// Fails (with the step in the error) rather than run half-dropped.
Result<void> drop_privileges(const std::optional<Identity>& who);

// One line for the log: "uid=65534 gid=65534 capabilities=none".
std::string describe_credentials();

}  // namespace ztp::app
