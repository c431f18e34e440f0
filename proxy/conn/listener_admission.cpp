#include "proxy/conn/listener_admission.hpp"

#include "proxy/base/log.hpp"

namespace ztp::conn {

namespace {

std::mutex g_kernel_mu;
std::string g_kernel_unavailable;  // guarded by g_kernel_mu: why the program could not load
bool g_loading_stopped = false;    // guarded by g_kernel_mu

// Remembers the first failure and logs it once for the whole process: an operator wants to know
// that admission runs in user space, not once per listener or per reload.
void kernel_failed(const std::string& why) {
    std::lock_guard lock(g_kernel_mu);
    if (!g_kernel_unavailable.empty()) return;
    g_kernel_unavailable = why;
    log::main().warn("eBPF admission unavailable ({}): [listener.admission] is enforced in user space, right "
                     "after accept (refused clients complete a TCP handshake first)", why);
}

bool loading_stopped() {
    std::lock_guard lock(g_kernel_mu);
    return g_loading_stopped;
}

bool kernel_known_unavailable() {
    std::lock_guard lock(g_kernel_mu);
    return !g_kernel_unavailable.empty();
}

}  // namespace

const char* to_string(ListenerAdmission::Enforcement e) {
    switch (e) {
        case ListenerAdmission::Enforcement::kernel: return "kernel";
        case ListenerAdmission::Enforcement::userspace: return "userspace";
        case ListenerAdmission::Enforcement::none: break;
    }
    return "none";
}

bpf::AdmissionPolicy admission_policy(const config::Admission& a) {
    return bpf::AdmissionPolicy{a.allow, a.deny, a.rate_per_second, a.burst, a.ipv6_rate_prefix, a.ipv4_rate_prefix};
}

void ListenerAdmission::stop_loading_programs() {
    std::lock_guard lock(g_kernel_mu);
    g_loading_stopped = true;
}

std::shared_ptr<ListenerAdmission> ListenerAdmission::create(const config::Listener& listener, std::vector<int> fds) {
    std::shared_ptr<ListenerAdmission> a(new ListenerAdmission(listener.name, std::move(fds)));
    std::lock_guard lock(a->mu_);
    a->enforce(admission_policy(listener.admission));
    return a;
}

void ListenerAdmission::update(const config::Admission& admission) {
    std::lock_guard lock(mu_);
    enforce(admission_policy(admission));
}

void ListenerAdmission::enforce(const bpf::AdmissionPolicy& policy) {
    policy_ = policy;
    if (kernel_) {
        // An empty policy leaves the program attached: it then passes every SYN.
        if (auto r = kernel_->update(policy); !r)
            log::main().error("listener '{}': admission maps not updated: {}", name_, r.error().message());
        return;
    }
    if (fallback_) {
        fallback_->update(policy);
        return;
    }
    if (policy.empty()) return;  // nothing to enforce yet: load nothing
    if (loading_stopped()) {
        fallback_ = std::make_unique<bpf::AdmissionFallback>(policy);
        log::main().warn("listener '{}': admission enforced in user space after accept (eBPF programs are loaded "
                         "at start only; restart to move it into the kernel)", name_);
        return;
    }
    if (!kernel_known_unavailable()) {
        auto loaded = bpf::Admission::load(policy);
        if (loaded) {
            bool attached = true;
            for (int fd : fds_) {
                if (auto r = (*loaded)->attach(fd); !r) {
                    kernel_failed(r.error().message());
                    attached = false;
                    break;
                }
            }
            if (attached) {
                kernel_ = std::move(loaded).value();
                log::main().info("listener '{}': admission enforced in the kernel (socket filter)", name_);
                return;
            }
            // Half attached: the program would judge some workers' SYNs and not others'.
            for (int fd : fds_) (void)bpf::Admission::detach(fd);
        } else {
            kernel_failed(loaded.error().message());
        }
    }
    fallback_ = std::make_unique<bpf::AdmissionFallback>(policy);
    log::main().info("listener '{}': admission enforced in user space after accept", name_);
}

bool ListenerAdmission::admit(const SocketAddress& peer) {
    std::lock_guard lock(mu_);
    if (!fallback_ || policy_.empty()) return true;
    return fallback_->admit(peer, std::chrono::steady_clock::now());
}

ListenerAdmission::Enforcement ListenerAdmission::enforcement() const {
    std::lock_guard lock(mu_);
    if (policy_.empty()) return Enforcement::none;
    return kernel_ ? Enforcement::kernel : Enforcement::userspace;
}

bpf::AdmissionCounters ListenerAdmission::counters() const {
    std::lock_guard lock(mu_);
    if (kernel_) return kernel_->counters();
    if (fallback_) return fallback_->counters();
    return {};
}

std::vector<std::string> ListenerAdmission::deny_rules() const {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (const auto& c : policy_.deny) out.push_back(c.to_string());
    return out;
}

}  // namespace ztp::conn
