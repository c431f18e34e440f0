#include "bpf/admission.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <vector>

#include "bpf/admission.skel.h"
#include "bpf/libbpf_log.hpp"
#include "bpf/ztp_bpf_shared.h"

namespace ztp::bpf {

static_assert(kMaxAdmissionRules == ZTP_ADMISSION_MAX_RULES);
static_assert(sizeof(ztp_lpm_key) == 20);

namespace {

ztp_lpm_key lpm_key(const std::array<uint8_t, 16>& addr, unsigned prefix) {
    ztp_lpm_key k{};
    k.prefixlen = prefix;
    std::memcpy(k.addr, addr.data(), 16);
    return k;
}

}  // namespace

Admission::Admission(admission_bpf* skel) : skel_(skel), ncpus_(libbpf_num_possible_cpus()) {}

Admission::~Admission() { admission_bpf__destroy(skel_); }

Result<std::unique_ptr<Admission>> Admission::load(const AdmissionPolicy& policy) {
    if (auto r = check_policy(policy); !r) return r.error();
    route_libbpf_logs();
    admission_bpf* skel = admission_bpf__open();
    if (!skel) return errno_error("bpf admission: open skeleton");
    // Owner first, so every later failure destroys the skeleton (and closes its fds).
    std::unique_ptr<Admission> a(new Admission(skel));
    if (a->ncpus_ <= 0) return make_error(a->ncpus_, "bpf admission: libbpf_num_possible_cpus");
    // Nothing to set in rodata: every knob must change on reload, so it lives in the config map.
    if (int err = admission_bpf__load(skel); err != 0)
        return make_error(err, "bpf admission: load (privileges: CAP_BPF or CAP_SYS_ADMIN; see debug log)");
    if (auto r = a->update(policy); !r) return r.error();
    return a;
}

int Admission::prog_fd() const { return bpf_program__fd(skel_->progs.ztp_admission); }

int Admission::rate_table_fd() const { return bpf_map__fd(skel_->maps.rate_table); }

Result<void> Admission::attach(int listen_fd) {
    const int fd = prog_fd();
    // SO_ATTACH_BPF takes an eBPF program fd (SO_ATTACH_FILTER would take classic BPF). It replaces
    // any filter already attached, so attaching twice is harmless.
    if (::setsockopt(listen_fd, SOL_SOCKET, SO_ATTACH_BPF, &fd, sizeof fd) != 0)
        return errno_error("setsockopt(SO_ATTACH_BPF)");
    return ok_result();
}

Result<void> Admission::detach(int fd) {
    int unused = 0;
    if (::setsockopt(fd, SOL_SOCKET, SO_DETACH_BPF, &unused, sizeof unused) != 0)
        return errno_error("setsockopt(SO_DETACH_BPF)");
    return ok_result();
}

Result<void> Admission::sync_rules(int map_fd, const std::vector<Cidr>& rules,
                                   std::map<RuleKey, uint32_t>& current, bool remove_stale) {
    if (!remove_stale) {
        // Phase 1: add or re-index every wanted rule. Duplicate networks keep the last index.
        for (uint32_t i = 0; i < rules.size(); ++i) {
            RuleKey rk{rules[i].mapped(), rules[i].mapped_prefix()};
            ztp_lpm_key k = lpm_key(rk.first, rk.second);
            if (bpf_map_update_elem(map_fd, &k, &i, BPF_ANY) != 0)
                return errno_error("bpf admission: update rule map");
            current[rk] = i;
        }
        return ok_result();
    }
    // Phase 2: remove what the new list no longer has.
    std::set<RuleKey> wanted;
    for (const Cidr& c : rules) wanted.insert({c.mapped(), c.mapped_prefix()});
    for (auto it = current.begin(); it != current.end();) {
        if (wanted.count(it->first)) {
            ++it;
            continue;
        }
        ztp_lpm_key k = lpm_key(it->first.first, it->first.second);
        if (bpf_map_delete_elem(map_fd, &k) != 0 && errno != ENOENT)
            return errno_error("bpf admission: delete rule");
        it = current.erase(it);
    }
    return ok_result();
}

Result<void> Admission::write_config(const AdmissionPolicy& p) {
    ztp_admission_config cfg{};
    if (p.rate_per_second != 0) {
        cfg.interval_ns = 1'000'000'000ull / p.rate_per_second;
        cfg.tolerance_ns = (static_cast<uint64_t>(p.burst) - 1) * cfg.interval_ns;
    }
    cfg.allow_rules = static_cast<uint32_t>(p.allow.size());
    ztp_set_rate_prefixes(&cfg, p.ipv6_rate_prefix, p.ipv4_rate_prefix);
    const uint32_t zero = 0;
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.config), &zero, &cfg, BPF_ANY) != 0)
        return errno_error("bpf admission: write config map");
    return ok_result();
}

void Admission::zero_deny_counters(size_t n) {
    // Per-CPU array values are one 8-byte slot per possible CPU.
    std::vector<uint64_t> zeros(static_cast<size_t>(ncpus_), 0);
    const int fd = bpf_map__fd(skel_->maps.counters);
    for (uint32_t i = 0; i < n && i < kMaxAdmissionRules; ++i) {
        uint32_t slot = ZTP_CTR_DENY_RULE0 + i;
        bpf_map_update_elem(fd, &slot, zeros.data(), BPF_ANY);
    }
}

Result<void> Admission::update(const AdmissionPolicy& p) {
    if (auto r = check_policy(p); !r) return r;
    const int allow_fd = bpf_map__fd(skel_->maps.allow_rules);
    const int deny_fd = bpf_map__fd(skel_->maps.deny_rules);
    const bool deny_changed = p.deny != policy_.deny;
    // Order matters (the program runs concurrently): new entries first, then the config (which
    // switches the allow list on or off and sets the rate), then stale entries go.
    if (auto r = sync_rules(deny_fd, p.deny, deny_keys_, false); !r) return r;
    if (auto r = sync_rules(allow_fd, p.allow, allow_keys_, false); !r) return r;
    if (auto r = write_config(p); !r) return r;
    if (auto r = sync_rules(deny_fd, p.deny, deny_keys_, true); !r) return r;
    if (auto r = sync_rules(allow_fd, p.allow, allow_keys_, true); !r) return r;
    if (deny_changed) zero_deny_counters(std::max(p.deny.size(), policy_.deny.size()));
    policy_ = p;
    return ok_result();
}

AdmissionCounters Admission::counters() const {
    const int fd = bpf_map__fd(skel_->maps.counters);
    std::vector<uint64_t> per_cpu(static_cast<size_t>(ncpus_));
    auto read = [&](uint32_t slot) -> uint64_t {
        if (bpf_map_lookup_elem(fd, &slot, per_cpu.data()) != 0) return 0;
        uint64_t sum = 0;
        for (uint64_t v : per_cpu) sum += v;
        return sum;
    };
    AdmissionCounters c;
    c.admitted = read(ZTP_CTR_ADMITTED);
    c.denied = read(ZTP_CTR_DENIED);
    c.not_allowed = read(ZTP_CTR_NOT_ALLOWED);
    c.rate_limited = read(ZTP_CTR_RATE_LIMITED);
    c.unparsed = read(ZTP_CTR_UNPARSED);
    c.per_deny_rule.resize(policy_.deny.size());
    for (uint32_t i = 0; i < c.per_deny_rule.size(); ++i) c.per_deny_rule[i] = read(ZTP_CTR_DENY_RULE0 + i);
    return c;
}

}  // namespace ztp::bpf
