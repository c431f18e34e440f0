#include "proxy/app/run_command.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <iostream>
#include <thread>

#include "crypto/ktls_probe.hpp"
#include "crypto/ticket_keys.hpp"
#include "proxy/app/admin_server.hpp"
#include "proxy/app/listeners.hpp"
#include "proxy/app/metrics.hpp"
#include "proxy/app/reload_requests.hpp"
#include "proxy/app/privileges.hpp"
#include "proxy/app/seccomp_filter.hpp"
#include "proxy/app/systemd_notify.hpp"
#include "proxy/base/log.hpp"
#include "proxy/base/version.hpp"
#include "proxy/conn/runtime.hpp"
#include "proxy/conn/stats.hpp"
#include "proxy/conn/worker.hpp"

namespace ztp::app {

namespace {

// `ktls = "require"` is a promise about every connection: refuse to start where the kernel
// cannot keep it, instead of refusing every connection later.
std::vector<std::string> unmet_ktls_requirements(const config::Policy& policy) {
    std::vector<std::string> problems;
    std::optional<crypto::KtlsProbe> probe;
    for (const auto& l : policy.listeners) {
        if (l.tls.ktls != config::KtlsMode::require) continue;
        if (!probe) probe = crypto::probe_ktls();
        if (!probe->ulp_available) {
            problems.push_back("listener '" + l.name + "' requires kTLS, but this kernel has none: " + probe->why_not);
            continue;
        }
        for (const auto& e : probe->entries) {
            bool version_used = e.version >= l.tls.min_version && e.version <= l.tls.max_version;
            bool cipher_used = std::find(l.tls.ciphers.begin(), l.tls.ciphers.end(), e.cipher) != l.tls.ciphers.end();
            if (version_used && cipher_used && !(e.tx && e.rx))
                problems.push_back("listener '" + l.name + "' requires kTLS, but this kernel cannot offload TLS " +
                                   config::to_string(e.version) + " " + config::to_string(e.cipher) + ": " + e.error);
        }
    }
    return problems;
}

// Each spliced connection needs up to six descriptors (two sockets, two pipes); a 1024 soft
// limit would refuse connections long before max_connections. Take what the hard limit allows
// and say when even that is short.
void raise_fd_limit(uint32_t max_connections) {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &lim);
    }
    const rlim_t minimum = static_cast<rlim_t>(max_connections) + 64;  // the client sockets alone
    const rlim_t spliced = static_cast<rlim_t>(max_connections) * 6 + 64;
    if (lim.rlim_cur < minimum)
        log::main().warn("file descriptor limit {} is below the {} that max_connections {} needs; raise "
                         "LimitNOFILE / ulimit -n", lim.rlim_cur, minimum, max_connections);
    else if (lim.rlim_cur < spliced)
        log::main().info("file descriptor limit {}: enough for about {} relayed connections ({} on the splice path)",
                         lim.rlim_cur, (lim.rlim_cur - 64) / 2, (lim.rlim_cur - 64) / 6);
}

bool same_listeners(const config::Policy& a, const config::Policy& b) {
    if (a.listeners.size() != b.listeners.size()) return false;
    for (size_t i = 0; i < a.listeners.size(); ++i)
        if (a.listeners[i].name != b.listeners[i].name || !(a.listeners[i].address == b.listeners[i].address))
            return false;
    return true;
}

bool is_loopback(const SocketAddress& a) {
    if (a.family() == AF_INET)
        return (ntohl(reinterpret_cast<const sockaddr_in*>(a.sa())->sin_addr.s_addr) >> 24) == 127;
    return a.family() == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(a.sa())->sin6_addr);
}

// Where the admin endpoint listens and what needs its token (never the token itself).
void log_admin_endpoint(const AdminServer& admin, const config::Admin& settings) {
    std::string auth = "no token: POST /reload is open to whoever can connect";
    if (!settings.token.empty())
        auth = settings.metrics_require_token ? "POST /reload and /metrics need the bearer token"
                                              : "POST /reload needs the bearer token";
    if (auto a = admin.address()) {
        log::main().info("admin endpoint on {} (/metrics, /healthz, /ready, POST /reload; {})", a->to_string(), auth);
        if (settings.token.empty() && !is_loopback(*a))
            log::main().warn("the admin endpoint listens on {}, beyond loopback, without a token: set [admin] "
                             "token_file or bind it to 127.0.0.1 or a Unix socket", a->to_string());
    }
    if (!admin.unix_path().empty())
        log::main().info("admin endpoint on unix:{} (mode {:04o}; {})", admin.unix_path(), settings.unix_socket_mode, auth);
}

log::Format log_format(config::LogFormat f) { return f == config::LogFormat::json ? log::Format::json : log::Format::text; }

// SIGHUP: the new policy is validated as completely as at start-up (syntax, references,
// certificates and keys, kTLS requirements) before anything changes; on any problem the running
// policy stays. Sockets are not rebound, so the listener set must stay the same.
std::shared_ptr<const conn::Runtime> reload_runtime(const PolicySource& reload, const conn::Runtime& current,
                                                    std::vector<std::string>& problems) {
    auto next = reload(problems);
    if (!next) return nullptr;
    if (!same_listeners(current.policy(), *next)) {
        problems.push_back("the listeners (names or addresses) changed; restart ztproxy to change them");
        return nullptr;
    }
    if (next->runtime.workers != current.policy().runtime.workers)
        log::main().warn("reload: runtime.workers changes take effect at the next restart");
    if (!(next->admin.address == current.policy().admin.address) ||
        next->admin.unix_socket != current.policy().admin.unix_socket ||
        next->admin.unix_socket_mode != current.policy().admin.unix_socket_mode)
        log::main().warn("reload: [admin] address and unix_socket changes take effect at the next restart");
    std::vector<config::Diagnostic> diagnostics;
    auto rt = conn::Runtime::build(std::move(*next), diagnostics);
    if (!rt) {
        for (const auto& d : diagnostics) problems.push_back(d.str());
        return nullptr;
    }
    if (auto unmet = unmet_ktls_requirements(rt->policy()); !unmet.empty()) {
        problems.insert(problems.end(), unmet.begin(), unmet.end());
        return nullptr;
    }
    return rt;
}

// The main thread's wait for SIGHUP/SIGINT/SIGTERM, which also keeps the generated session ticket
// keys on their schedule: a retired key is dropped (and scrubbed) on time even when no handshake
// asks for keys, which bounds how long a key that could decrypt old tickets stays in memory.
int wait_for_signal(const sigset_t& set) {
    const auto& tickets = crypto::TicketKeyStore::process();
    for (;;) {
        tickets->rotate_if_due();
        const auto left = std::chrono::ceil<std::chrono::seconds>(
            tickets->next_rotation().value_or(std::chrono::steady_clock::now()) - std::chrono::steady_clock::now());
        const timespec timeout{std::max<time_t>(1, static_cast<time_t>(left.count())), 0};
        const int sig = ::sigtimedwait(&set, nullptr, &timeout);
        if (sig > 0) return sig;  // else EAGAIN (rotation due) or EINTR
    }
}

}  // namespace

int run_policy(config::Policy policy, const RunOptions& options) {
    const auto& reload = options.reload;
    std::vector<config::Diagnostic> problems;
    auto runtime = conn::Runtime::build(std::move(policy), problems);
    if (!runtime) {
        for (const auto& p : problems) std::cerr << p.str() << "\n";
        log::main().error("policy rejected: {} problem(s)", problems.size());
        return 1;
    }
    const auto& pol = runtime->policy();
    raise_fd_limit(pol.limits.max_connections);
    harden_process();
    if (auto unmet = unmet_ktls_requirements(pol); !unmet.empty()) {
        for (const auto& u : unmet) log::main().error("{}", u);
        return 1;
    }
    // Before anything listens: a user that does not exist is a policy mistake, found at once.
    std::string why;
    const auto identity = resolve_identity(pol.process, &why);
    if (!why.empty()) {
        log::main().error("[process]: {}", why);
        return 1;
    }
    unsigned workers = pol.runtime.workers ? pol.runtime.workers : std::max(1u, std::thread::hardware_concurrency());

    // Bind everything before serving: a policy that cannot listen fails at start-up, whole.
    auto listeners = open_listeners(*runtime, workers);
    if (!listeners) return 1;  // logged with the listener's name
    std::vector<std::vector<conn::ListenSocket>> per_worker(workers);
    std::vector<BoundListener> bound;
    std::vector<std::shared_ptr<conn::ListenerAdmission>> admissions;
    for (size_t li = 0; li < listeners->size(); ++li) {
        OpenListener& l = (*listeners)[li];
        for (unsigned w = 0; w < workers; ++w) per_worker[w].push_back({li, std::move(l.worker_fds[w]), l.admission});
        bound.push_back({l.name, l.address, l.inherited});
        admissions.push_back(l.admission);
    }

    auto requests = ReloadRequests::create(::pthread_self());  // outlives the admin thread that uses it
    if (!requests) {
        log::main().error("cannot start: {}", requests.error().message());
        return 1;
    }
    ReloadRequests& reload_requests = **requests;
    std::unique_ptr<AdminServer> admin;
    const AdminServer::Endpoints admin_at{options.admin ? options.admin : pol.admin.address, pol.admin.unix_socket,
                                          pol.admin.unix_socket_mode};
    if (admin_at.tcp || !admin_at.unix_path.empty()) {
        auto a = AdminServer::bind(admin_at, AdminServer::settings_from(pol.admin),
                                   [admissions] { return render_metrics(admissions); },
                                   reload ? &reload_requests : nullptr);
        if (!a) {
            log::main().error("cannot start the admin endpoint on {}: {}",
                              admin_at.tcp ? admin_at.tcp->to_string() : "unix:" + admin_at.unix_path,
                              a.error().message());
            return 1;
        }
        admin = std::move(a).value();
    }

    // Everything that needs privileges happens above this line: binding (ports below 1024) and
    // loading and attaching the admission and steering programs (open_listeners, CAP_BPF). The
    // process has one thread here (the demo's backend aside), so the drop reaches every thread.
    // Then the workers' rings are created unprivileged, then the system-call filter closes the
    // door behind them (map updates on reload stay possible; program loads do not).
    conn::ListenerAdmission::stop_loading_programs();
    if (auto dropped = drop_privileges(identity); !dropped) {
        log::main().error("cannot drop privileges: {}", dropped.error().message());
        return 1;
    }
    log::main().info("running as {}", describe_credentials());

    // Signals are taken synchronously by this thread (sigwait); workers never see them. Blocked
    // before any thread starts: threads inherit the mask.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    std::vector<std::unique_ptr<conn::Worker>> pool;
    for (unsigned w = 0; w < workers; ++w) {
        auto worker = conn::Worker::create(w, runtime, std::move(per_worker[w]));
        if (!worker) {
            log::main().error("cannot start worker {}: {}", w, worker.error().message());
            return 1;
        }
        pool.push_back(std::move(worker).value());
    }
    if (!apply_seccomp(pol.process.seccomp)) return 1;
    if (admin) {
        admin->start();
        log_admin_endpoint(*admin, pol.admin);
    }
    for (auto& w : pool) w->start();
    log::main().info("ztproxy {} started: {} worker(s), policy {}", kVersion, workers, pol.source);
    for (const auto& b : bound) log::main().info("listener '{}' listening on {}", b.name, b.address.to_string());
    if (options.on_listening) options.on_listening(bound);
    const std::string serving = "serving " + std::to_string(bound.size()) + " listener(s) with " +
                                std::to_string(workers) + " worker(s)";
    notify::ready(serving);

    for (;;) {
        const int sig = wait_for_signal(set);
        if (sig == SIGHUP) {
            if (!reload) {
                log::main().warn("SIGHUP: nothing to reload (no policy file); still serving");
                continue;
            }
            log::main().info("SIGHUP: reloading the policy");
            notify::reloading();
            reload_requests.begin();
            ReloadOutcome outcome;
            if (auto next = reload_runtime(reload, *runtime, outcome.problems)) {
                outcome.applied = true;
                runtime = next;
                for (size_t li = 0; li < admissions.size(); ++li)
                    admissions[li]->update(runtime->policy().listeners[li].admission);
                for (auto& w : pool) w->swap_runtime(runtime);
                if (admin) admin->update(AdminServer::settings_from(runtime->policy().admin));
                log::setup(runtime->policy().logging.level, log_format(runtime->policy().logging.format));
                conn::bump(conn::stats().reloads_ok);
                log::main().info("reload applied: new connections use the new policy; live ones finish on theirs");
                notify::ready(serving + "; policy reloaded");
            } else {
                conn::bump(conn::stats().reloads_failed);
                for (const auto& p : outcome.problems) log::main().error("reload rejected: {}", p);
                log::main().warn("reload failed: still serving the previous policy");
                notify::ready(serving + "; the last reload failed (see the log), previous policy in force");
            }
            reload_requests.finish(outcome);
            continue;
        }
        log::main().info("{}: draining: new connections are refused, live ones may finish within {} ms",
                         sig == SIGINT ? "SIGINT" : "SIGTERM", runtime->policy().limits.drain_timeout.count());
        break;
    }
    reload_requests.close();  // no reloads while draining: answer at once instead of waiting
    notify::stopping("draining: new connections are refused, live ones may finish");
    if (admin) admin->set_ready(false);  // load balancers: stop sending here
    auto deadline = conn::Clock::now() + runtime->policy().limits.drain_timeout;
    for (auto& w : pool) w->request_stop(deadline);
    // Drain: a second SIGTERM/SIGINT ends the remaining connections at once.
    const timespec poll_interval{0, 100'000'000};
    while (!std::all_of(pool.begin(), pool.end(), [](const auto& w) { return w->done(); })) {
        int sig = ::sigtimedwait(&set, nullptr, &poll_interval);
        if (sig == SIGINT || sig == SIGTERM) {
            log::main().info("second signal: closing the remaining connections now");
            for (auto& w : pool) w->request_stop(conn::Clock::now());
        }
    }
    for (auto& w : pool) w->join();
    log::main().info("stopped");
    return 0;
}

}  // namespace ztp::app
