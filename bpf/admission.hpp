// Admission in the kernel: the socket filter of bpf/admission.bpf.c, loaded once per listener and
// attached to each of that listener's listening sockets (one per worker with SO_REUSEPORT).
//
//   auto adm = Admission::load(policy);            // open skeleton → load → fill maps
//   if (!adm) { log once; use AdmissionFallback; } // EPERM: no CAP_BPF / locked down / seccomp
//   adm.value()->attach(fd) for every socket of the listener, after socket(), any time
//   adm.value()->update(new_policy)                // reload: maps changed in place, never detached
//   adm.value()->counters()                        // drops per reason and per deny rule
//
// Keep the Admission alive as long as its sockets: the attached program keeps working without it
// (the kernel holds its own reference), but update() and counters() need the map fds.
//
// update() is not one atomic switch: new entries are added before stale ones are removed, so for
// a moment a SYN may be judged by the union of the old and new deny lists (stricter) or allow lists
// (looser). Going from an empty allow list to a non-empty one, the entries are in place before the
// program starts enforcing them.
#pragma once

#include <map>
#include <memory>
#include <utility>

#include "bpf/admission_policy.hpp"
#include "proxy/base/result.hpp"

struct admission_bpf;  // the bpftool skeleton (generated: <build>/generated/bpf/admission.skel.h)

namespace ztp::bpf {

class Admission {
public:
    using Counters = AdmissionCounters;

    static Result<std::unique_ptr<Admission>> load(const AdmissionPolicy& policy);
    ~Admission();
    Admission(const Admission&) = delete;
    Admission& operator=(const Admission&) = delete;

    // setsockopt(SO_ATTACH_BPF). Works before or after listen(); attach before listen() so no SYN
    // arrives unfiltered. Accepted sockets inherit the filter (it passes their segments).
    Result<void> attach(int listen_fd);
    // setsockopt(SO_DETACH_BPF), e.g. on an accepted socket to save the per-segment run.
    static Result<void> detach(int fd);

    Result<void> update(const AdmissionPolicy& policy);
    Counters counters() const;
    const AdmissionPolicy& policy() const { return policy_; }
    int prog_fd() const;        // for BPF_PROG_TEST_RUN in the tests
    int rate_table_fd() const;  // for the tests: which rate buckets exist

private:
    using RuleKey = std::pair<std::array<uint8_t, 16>, unsigned>;  // mapped network, mapped prefix

    explicit Admission(admission_bpf* skel);
    Result<void> sync_rules(int map_fd, const std::vector<Cidr>& rules, std::map<RuleKey, uint32_t>& current,
                            bool remove_stale);
    Result<void> write_config(const AdmissionPolicy& p);
    void zero_deny_counters(size_t n);

    admission_bpf* skel_;
    int ncpus_;
    AdmissionPolicy policy_;
    std::map<RuleKey, uint32_t> allow_keys_, deny_keys_;  // what the tries hold now
};

}  // namespace ztp::bpf
