#include "proxy/app/cli.hpp"

#include <CLI/CLI.hpp>

#include <iostream>

#include "config/admin_token.hpp"
#include "config/policy_loader.hpp"
#include "proxy/app/check_command.hpp"
#include "proxy/app/demo_command.hpp"
#include "proxy/app/probe_command.hpp"
#include "proxy/app/quick_policy.hpp"
#include "proxy/app/run_command.hpp"
#include "proxy/base/log.hpp"
#include "proxy/base/version.hpp"

namespace ztp::app {

namespace {

struct GlobalOptions {
    std::string log_level;   // empty = the policy's
    std::string log_format;  // empty = the policy's
};

log::Format to_log_format(config::LogFormat f) { return f == config::LogFormat::json ? log::Format::json : log::Format::text; }

// Command-line logging flags override the policy's [logging] section (at start and on reload).
void override_logging(const GlobalOptions& g, config::Policy& p) {
    if (!g.log_level.empty()) p.logging.level = g.log_level;
    if (!g.log_format.empty()) p.logging.format = g.log_format == "json" ? config::LogFormat::json : config::LogFormat::text;
}

bool apply_logging(const GlobalOptions& g, config::Policy& p) {
    override_logging(g, p);
    if (!log::setup(p.logging.level, to_log_format(p.logging.format))) {
        std::cerr << "ztproxy: unknown log level '" << p.logging.level << "'\n";
        return false;
    }
    return true;
}

struct AdminOptions {
    std::string address;     // --admin; empty = the policy's
    std::string token_file;  // --admin-token-file; empty = the policy's
};

std::optional<SocketAddress> admin_address(const std::string& text) {
    if (text.empty()) return std::nullopt;
    return SocketAddress::parse(text);
}

// --admin-token-file overrides [admin] token_file, and is read again at every reload (a rotated
// token takes effect without a restart). The message never quotes the file's contents.
bool override_admin_token(const AdminOptions& a, config::Policy& p, std::string* why) {
    if (a.token_file.empty()) return true;
    auto token = config::read_admin_token(a.token_file, why);
    if (!token) {
        *why = "--admin-token-file '" + a.token_file + "': " + *why;
        return false;
    }
    p.admin.token_file = a.token_file;
    p.admin.token = std::move(*token);
    return true;
}

int run_from_file(const std::string& path, const GlobalOptions& g, const AdminOptions& admin) {
    auto outcome = config::load_policy_file(path);
    if (!outcome.policy) {
        for (const auto& p : outcome.problems) std::cerr << p.str() << "\n";
        std::cerr << "ztproxy: " << path << ": " << outcome.problems.size() << " problem(s); not starting\n";
        return 1;
    }
    if (!apply_logging(g, *outcome.policy)) return 1;
    if (std::string why; !override_admin_token(admin, *outcome.policy, &why)) {
        std::cerr << "ztproxy: " << why << "\n";
        return 1;
    }
    auto reload = [path, g, admin](std::vector<std::string>& problems) -> std::optional<config::Policy> {
        auto next = config::load_policy_file(path);
        if (!next.policy) {
            for (const auto& p : next.problems) problems.push_back(p.str());
            return std::nullopt;
        }
        override_logging(g, *next.policy);
        if (std::string why; !override_admin_token(admin, *next.policy, &why)) {
            problems.push_back(why);
            return std::nullopt;
        }
        return std::move(next.policy);
    };
    RunOptions options;
    options.reload = reload;
    options.admin = admin_address(admin.address);
    return run_policy(std::move(*outcome.policy), options);
}

int run_quick(const QuickOptions& q, const GlobalOptions& g, const AdminOptions& admin) {
    std::vector<std::string> problems;
    auto policy = quick_policy(q, problems);
    if (!problems.empty()) {
        for (const auto& p : problems) std::cerr << "ztproxy: " << p << "\n";
        return 1;
    }
    if (!apply_logging(g, policy)) return 1;
    if (std::string why; !override_admin_token(admin, policy, &why)) {
        std::cerr << "ztproxy: " << why << "\n";
        return 1;
    }
    RunOptions options;
    options.admin = admin_address(admin.address);
    return run_policy(std::move(policy), options);
}

}  // namespace

int main_cli(int argc, char** argv) {
    CLI::App app{"ztproxy: a zero-copy TLS termination proxy (kTLS, io_uring, splice)", "ztproxy"};
    app.set_version_flag("--version", std::string("ztproxy ") + kVersion);
    app.require_subcommand(1);
    app.fallthrough();

    GlobalOptions g;
    app.add_option("--log-level", g.log_level, "trace, debug, info, warn, error or off (overrides the policy)")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
    app.add_option("--log-format", g.log_format, "text or json (overrides the policy)")
        ->check(CLI::IsMember({"text", "json"}));

    auto* run = app.add_subcommand("run", "Terminate TLS in front of backends (foreground)");
    std::string policy_path;
    QuickOptions q;
    auto* config_opt = run->add_option("-c,--config", policy_path, "Policy file (TOML)")->check(CLI::ExistingFile);
    AdminOptions admin;
    run->add_option("--admin", admin.address,
                    "Admin endpoint address (/metrics, /healthz, /ready, POST /reload), e.g. 127.0.0.1:9901")
        ->check([](const std::string& v) {
            std::string why;
            return SocketAddress::parse(v, &why) ? std::string() : "--admin: " + why;
        });
    run->add_option("--admin-token-file", admin.token_file,
                    "Bearer token file for POST /reload (and /metrics with [admin] metrics_require_token); "
                    "overrides [admin] token_file, read again on reload");
    auto* listen_opt = run->add_option("--listen", q.listen, "Quick mode: address to listen on, e.g. 0.0.0.0:8443");
    run->add_option("--backend", q.backends, "Quick mode: backend address (repeatable)");
    run->add_option("--cert", q.cert, "Quick mode: certificate chain (PEM)");
    run->add_option("--key", q.key, "Quick mode: private key (PEM)");
    run->add_option("--alpn", q.alpn, "Quick mode: ALPN protocols in preference order (repeatable)");
    run->add_option("--tls-min", q.min_version, "Quick mode: minimum TLS version (1.2 or 1.3)");
    run->add_option("--tls-max", q.max_version, "Quick mode: maximum TLS version (1.2 or 1.3)");
    run->add_option("--handshake-timeout", q.handshake_timeout, "Quick mode: e.g. 5s");
    run->add_option("--idle-timeout", q.idle_timeout, "Quick mode: e.g. 60s");
    run->add_option("--drain-timeout", q.drain_timeout, "Quick mode: how long SIGTERM lets connections finish, e.g. 30s");
    run->add_option("--connection-buffer", q.connection_buffer, "Quick mode: per-direction buffer, e.g. 64KiB");
    run->add_option("--ktls", q.ktls, "Quick mode: kernel TLS: auto (default), require or off")
        ->check(CLI::IsMember({"auto", "require", "off"}));
    run->add_option("--redact-request", q.redact_request,
                    "Quick mode: mask matches of this regular expression client → backend (repeatable)");
    run->add_option("--redact-response", q.redact_response,
                    "Quick mode: mask matches of this regular expression backend → client (repeatable)");
    run->add_option("--redact-on-pause", q.redact_on_pause,
                    "Quick mode: held bytes a pending match could cover when the input pauses: mask (default), "
                    "hold or release")
        ->check(CLI::IsMember({"mask", "hold", "release"}));
    run->add_option("--allow", q.allow,
                    "Quick mode: admit only clients in this network, e.g. 10.0.0.0/8 (repeatable; kernel-enforced)");
    run->add_option("--deny", q.deny, "Quick mode: refuse clients in this network (repeatable; deny wins)");
    run->add_option("--client-ca", q.client_ca,
                    "Quick mode: require client certificates issued by these CAs (PEM bundle; mTLS)");
    run->add_option("--client-auth", q.client_auth, "Quick mode: with --client-ca: require (default) or optional")
        ->check(CLI::IsMember({"optional", "require"}));
    run->add_option("--proxy-protocol", q.proxy_protocol,
                    "Quick mode: send a PROXY protocol v2 header to the backend: off (default) or v2")
        ->check(CLI::IsMember({"off", "v2"}));
    run->add_option("--session-ticket-keys", q.session_ticket_keys,
                    "Quick mode: session ticket key file (base64 keys, one per line; the first encrypts), shared "
                    "by every instance that should resume the others' sessions");
    run->add_option("--tls13-tickets", q.tls13_tickets,
                    "Quick mode: TLS 1.3 session tickets sent after each full handshake, 0 to 8 (default 1)");
    run->add_option("--user", q.user, "Quick mode: user to switch to once the listener is bound");
    run->add_option("--group", q.group, "Quick mode: group to switch to (default: the user's primary group)");
    run->add_option("--record-path", q.record_path,
                    "Quick mode: auto (kernel, else userspace), kernel, userspace or openssl")
        ->check(CLI::IsMember({"auto", "kernel", "userspace", "openssl"}));
    run->add_option("--max-connections", q.max_connections, "Quick mode: connection limit");
    run->add_option("--max-connections-per-source", q.max_connections_per_source,
                    "Quick mode: open connections per client address (0 = no limit)");
    run->add_option("--workers", q.workers, "Quick mode: worker threads (default: one per CPU)");
    config_opt->excludes(listen_opt);

    auto* check = app.add_subcommand("check", "Validate a policy file (exit 1 on any problem)");
    std::string check_path;
    check->add_option("-c,--config", check_path, "Policy file (TOML)")->required();

    auto* probe = app.add_subcommand("probe", "Report what this host supports: kTLS, io_uring, BPF");
    bool probe_json = false;
    probe->add_flag("--json", probe_json, "Machine-readable output");

    auto* demo = app.add_subcommand("demo", "Run a throwaway demo: CA, certificate, backend, proxy");
    std::string demo_dir = ".demo";
    std::string demo_listen = "127.0.0.1:8443";
    demo->add_option("--workdir", demo_dir, "Where the demo CA and certificate are written")->capture_default_str();
    demo->add_option("--listen", demo_listen, "Address the demo proxy listens on")->capture_default_str();

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    if (run->parsed()) {
        if (!policy_path.empty()) return run_from_file(policy_path, g, admin);
        if (q.listen.empty() || q.backends.empty() || q.cert.empty() || q.key.empty()) {
            std::cerr << "ztproxy run: give -c POLICY, or --listen, --backend, --cert and --key (see --help)\n";
            return 2;
        }
        return run_quick(q, g, admin);
    }
    config::Policy defaults;
    if (!apply_logging(g, defaults)) return 1;
    if (check->parsed()) return check_command(check_path);
    if (probe->parsed()) return probe_command(probe_json);
    if (demo->parsed()) return demo_command(demo_dir, demo_listen);
    return 2;
}

}  // namespace ztp::app
