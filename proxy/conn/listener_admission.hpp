// ListenerAdmission: one listener's [listener.admission], enforced where it is cheapest.
//
//   kernel:    bpf/admission.bpf.c attached (SO_ATTACH_BPF) to each of the listener's sockets before
//              listen(): a refused SYN is dropped before it costs a TCP handshake, let alone a TLS one.
//   userspace: where the program cannot load (no CAP_BPF, lockdown, seccomp): the same policy,
//              judged by bpf::AdmissionFallback right after accept; the connection is closed
//              unanswered. The reason is logged once per process.
//
// One instance per listener for the life of the process, shared by the workers (admit() is
// thread-safe) and updated in place on reload: the kernel's maps change, the program stays
// attached. A listener without admission at start gets an instance too, so a reload can turn it on.
//
// The listener's sockets are owned by the workers; the fds given here are used only from the main
// thread, at start and in reloads, which never overlap the drain that closes them.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bpf/admission.hpp"
#include "bpf/admission_fallback.hpp"
#include "config/policy.hpp"
#include "proxy/base/result.hpp"
#include "proxy/base/socket_address.hpp"

namespace ztp::conn {

class ListenerAdmission {
public:
    enum class Enforcement { none, kernel, userspace };

    // `fds`: the listener's sockets (bound, not necessarily listening yet).
    static std::shared_ptr<ListenerAdmission> create(const config::Listener& listener, std::vector<int> fds);

    // Called after accept: false = close the connection. Always true unless enforcing in user space
    // (the kernel already judged every SYN that reached the accept queue).
    bool admit(const SocketAddress& peer);

    // Reload: the listener's new [listener.admission] (possibly empty).
    void update(const config::Admission& admission);

    Enforcement enforcement() const;
    bpf::AdmissionCounters counters() const;
    // The deny rules the per-rule counters refer to (same order), as text.
    std::vector<std::string> deny_rules() const;
    const std::string& listener() const { return name_; }

    // From now on no program is loaded (the process is about to drop CAP_BPF and install a seccomp
    // filter without program loading): a reload that turns admission on for a listener that had
    // none enforces it in user space.
    static void stop_loading_programs();

private:
    ListenerAdmission(std::string name, std::vector<int> fds) : name_(std::move(name)), fds_(std::move(fds)) {}
    void enforce(const bpf::AdmissionPolicy& policy);  // under mu_

    std::string name_;
    std::vector<int> fds_;
    mutable std::mutex mu_;
    bpf::AdmissionPolicy policy_;
    std::unique_ptr<bpf::Admission> kernel_;
    std::unique_ptr<bpf::AdmissionFallback> fallback_;
};

const char* to_string(ListenerAdmission::Enforcement e);  // "none" / "kernel" / "userspace"

// config::Admission → what the loader and the fallback take.
bpf::AdmissionPolicy admission_policy(const config::Admission& admission);

}  // namespace ztp::conn
