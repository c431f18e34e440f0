// The TOML policy file, read with toml++ into config::Policy.
//
//   [runtime]
//   workers = 2                     # 0 or absent = one per CPU (max 1024)
//
//   [logging]
//   level = "info"                  # trace|debug|info|warn|error|off
//   format = "text"                 # text|json
//   access_log = true
//
//   [admin]
//   address = "127.0.0.1:9901"      # the admin endpoint: /metrics /healthz /ready, POST /reload
//   unix_socket = "/run/ztproxy/admin.sock"  # also (or instead) on a Unix socket
//   unix_socket_mode = "0600"       # "0600" | "0660"
//   token_file = "admin.token"      # bearer token (>= 16 visible characters) for POST /reload
//   metrics_require_token = false   # /metrics needs the token too; needs token_file
//   max_connections = 64            # 1..4096; at the cap the oldest unfinished request is closed
//   max_request = "8KiB"            # request head size, 1KiB..64KiB
//   request_timeout = "2s"          # the whole request, accept to last response byte; <= 60s
//
//   [limits]
//   max_connections = 10000         # per process, >= 1
//   max_connections_per_source = 0  # open connections per client address; 0 = no limit
//   handshake_timeout = "10s"       # durations: "250ms", "5s", "2m", "1h", "1m30s"; > 0
//   idle_timeout = "5m"
//   backend_connect_timeout = "5s"
//   drain_timeout = "30s"           # SIGTERM/SIGINT: how long live connections may finish
//   connection_buffer = "64KiB"     # integer bytes or size string; min 4KiB, max 16MiB
//
//   [process]                       # applied once the listeners are bound (and BPF attached)
//   user = "ztproxy"                # switch to this user (name or uid; not root); needs root to start
//   group = "ztproxy"               # default: the user's primary group; needs user
//   seccomp = "auto"                # auto|require|log|off: the system-call allow-list
//
//   [[listener]]
//   name = "public"                 # required, unique
//   address = "0.0.0.0:8443"        # required; "[::]:8443" for IPv6; no host names
//     [listener.tls]                # required
//     min_version = "1.2"           # "1.2"|"1.3"
//     max_version = "1.3"
//     ciphers = ["AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305"]  # subset, non-empty, any case
//     alpn = ["h2", "http/1.1"]     # optional; each 1..255 bytes
//     session_tickets = true
//     tls13_tickets = 1             # TLS 1.3 tickets per full handshake, 0..8 (OpenSSL's own default: 2)
//     session_ticket_keys = "tickets/keys"  # optional: base64 keys, one per line (80 bytes: 16 name,
//                                   # 32 HMAC, 32 AES); the first encrypts, all decrypt. Absent =
//                                   # generated, kept across reloads, rotated every 12 h
//     ktls = "auto"                 # auto|require|off: record crypto in the kernel after the handshake
//     record_path = "auto"          # auto|kernel|userspace|openssl (auto: kernel, else userspace)
//     client_auth = "none"          # none|optional|require: client certificates (mTLS)
//     client_ca = "certs/clients.pem"  # trusted client CAs (PEM); required unless client_auth = "none"
//     verify_depth = 4              # intermediates allowed below a trusted CA, 0..16
//     default_certificate = "main"  # optional; default = first certificate
//     [[listener.tls.certificate]]  # at least one
//     name = "main"                 # required, unique within the listener
//     cert = "certs/main.pem"       # required; relative = relative to this file's directory
//     key = "certs/main.key"        # required; same
//     server_names = ["a.example.com", "*.example.com"]  # optional; lower-cased; "*." only leading
//     [listener.admission]          # optional: enforced in the kernel before the handshake (BPF)
//     allow = ["10.0.0.0/8", "::1/128"]  # networks (or single addresses); empty/absent = everyone
//     deny = ["10.9.0.0/16"]        # deny wins over allow; at most 1024 entries per list
//     rate_per_second = 50          # new connections per second per source, 1..1000000
//     burst = 100                   # connections a source may open at once, 1..1000000; both or neither
//     ipv6_rate_prefix = 64         # a rate source is an IPv6 /N, 32..128 (default 64); needs a rate
//     ipv4_rate_prefix = 32         # and an IPv4 /N, 16..32 (default 32); needs a rate
//
//   [[backend]]
//   name = "app"                    # required, unique
//   addresses = ["127.0.0.1:8080"]  # required, non-empty (or `address = "..."`, a single one)
//   proxy_protocol = "off"          # off|v2: a PROXY protocol v2 header before the first relayed byte
//
//   [[route]]
//   listener = "public"             # optional: absent = every listener
//   server_names = ["a.example.com"]  # either server_names (exact or "*.suffix")...
//   default = true                  # ...or default = true, exactly one of the two
//   backend = "app"                 # required
//   rules = ["card-number"]         # optional: [[rule]] ids, in priority order; such a route takes
//                                   # the rewrite relay (its plaintext is never spliced)
//   allow_length_change = false     # must be true if a rule's replacement can change the length
//   on_pause = "mask"               # mask|hold|release: held bytes a pending match could cover,
//                                   # when the input pauses (README "Redaction")
//   pause = "20ms"                  # how long the input must be quiet to count as a pause (1ms..60s)
//
//   [[rule]]                        # redaction: matching bytes are replaced before they pass
//   id = "card-number"              # required, unique
//   direction = "request"           # request (client → backend) | response | both (the default)
//   pattern = '\b(?:\d[ -]?){13,16}\b'  # Hyperscan regex, bounded (max 4096 bytes), never empty...
//   literal = "Authorization: Bearer "  # ...or exact bytes; exactly one of pattern / literal
//   case_insensitive = false
//   mask = "*"                      # one byte; each matched byte becomes it (the default "*")...
//   replacement = "[REDACTED]"      # ...or a fixed string per match; a length other than the
//                                   # match's needs allow_length_change on every route using it
//
// Unknown keys are errors at the key, wrong types at the value, missing required keys at the
// table header. All problems are collected, then the semantic checks of validate_policy() run
// on what could be read. Certificate files are not opened here: the crypto layer does that, so
// `ztproxy check` and `ztproxy run` fail the same way.
#include "config/policy_loader.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "config/policy_validate.hpp"
#include "config/admin_section.hpp"
#include "config/admission_section.hpp"
#include "config/process_section.hpp"
#include "config/tls_section.hpp"
#include "config/toml_reader.hpp"
#include "config/units.hpp"

namespace ztp::config {

namespace {

namespace fs = std::filesystem;
using detail::in_quotes;
using detail::StringItem;
using detail::TomlReader;

constexpr std::string_view kRoot = "root table";
constexpr std::string_view kRuntime = "[runtime]";
constexpr std::string_view kLogging = "[logging]";
constexpr std::string_view kLimits = "[limits]";
constexpr std::string_view kListener = "[[listener]]";
constexpr std::string_view kBackend = "[[backend]]";
constexpr std::string_view kRoute = "[[route]]";
// A route's `pause`: shorter cuts more secrets at a pause; longer delays every reply whose request
// ends in bytes that could begin a match.
constexpr std::chrono::milliseconds kMinPause{1}, kMaxPause{60'000};
constexpr std::string_view kRule = "[[rule]]";

class PolicyReader {
public:
    PolicyReader(const std::string& path, std::vector<Diagnostic>& out, Policy& policy)
        : r_(path, out), p_(policy) {
        // A policy given as "policy.toml" resolves "certs/a.pem" against the current directory.
        std::error_code ec;
        fs::path dir = fs::path(path).parent_path();
        base_dir_ = fs::absolute(dir.empty() ? fs::path(".") : dir, ec).lexically_normal();
    }

    void read(const toml::table& root) {
        r_.check_keys(root, {"runtime", "logging", "limits", "admin", "process", "listener", "backend", "route", "rule"},
                      kRoot);
        if (auto* t = r_.table(root, "runtime", kRoot)) read_runtime(*t);
        if (auto* t = r_.table(root, "logging", kRoot)) read_logging(*t);
        if (auto* t = r_.table(root, "limits", kRoot)) read_limits(*t);
        if (auto* t = r_.table(root, "admin", kRoot)) detail::read_admin(r_, *t, base_dir_.string(), p_.admin);
        if (auto* t = r_.table(root, "process", kRoot)) detail::read_process(r_, *t, p_.process);
        auto listeners = r_.tables(root, "listener", kRoot, "listener");
        if (const toml::node* n = root.get("listener"); !n || (n->is_array() && n->as_array()->empty()))
            r_.error(n ? n->source() : toml::source_region{{1, 1}, {1, 1}, nullptr},
                     "no listener: at least one [[listener]] is required");
        for (auto* t : listeners) read_listener(*t);
        for (auto* t : r_.tables(root, "backend", kRoot, "backend")) read_backend(*t);
        for (auto* t : r_.tables(root, "route", kRoot, "route")) read_route(*t);
        for (auto* t : r_.tables(root, "rule", kRoot, "rule")) read_rule(*t);
    }

private:
    void read_runtime(const toml::table& t) {
        p_.runtime.loc = r_.loc(t.source());
        r_.check_keys(t, {"workers"}, kRuntime);
        if (auto v = r_.integer(t, "workers", kRuntime)) {
            if (*v < 0 || *v > 1024)
                r_.error(TomlReader::at(t, "workers"), "'workers' must be between 0 and 1024");
            else
                p_.runtime.workers = static_cast<unsigned>(*v);
        }
    }

    void read_logging(const toml::table& t) {
        Logging& lg = p_.logging;
        lg.loc = r_.loc(t.source());
        r_.check_keys(t, {"level", "format", "access_log"}, kLogging);
        if (auto v = r_.string(t, "level", kLogging)) {
            static constexpr std::string_view levels[] = {"trace", "debug", "info", "warn", "error", "off"};
            if (std::find(std::begin(levels), std::end(levels), *v) != std::end(levels))
                lg.level = *v;
            else
                r_.error(TomlReader::at(t, "level"), "'level' must be one of trace, debug, info, warn, error, off");
        }
        if (auto i = r_.choice(t, "format", kLogging, {"text", "json"})) lg.format = static_cast<LogFormat>(*i);
        if (auto v = r_.boolean(t, "access_log", kLogging)) lg.access_log = *v;
    }

    void duration(const toml::table& t, std::string_view key, std::chrono::milliseconds& out,
                  std::string_view where = kLimits) {
        const toml::node* n = r_.get(t, key, where, false);
        if (!n) return;
        const auto* s = n->as_string();
        if (!s) return r_.type_error(key, *n, "a duration string such as \"10s\"");
        std::string why;
        auto d = parse_duration(s->get(), &why);
        if (!d)
            r_.error(n->source(),
                     "bad duration " + in_quotes(s->get()) + " for " + in_quotes(key) + ": " + why);
        else if (d->count() <= 0)
            r_.error(n->source(), in_quotes(key) + " must be greater than 0");
        else
            out = *d;
    }

    void read_limits(const toml::table& t) {
        Limits& lim = p_.limits;
        lim.loc = r_.loc(t.source());
        r_.check_keys(t,
                      {"max_connections", "max_connections_per_source", "handshake_timeout", "idle_timeout", "backend_connect_timeout",
                       "drain_timeout", "connection_buffer"},
                      kLimits);
        if (auto v = r_.integer(t, "max_connections", kLimits)) {
            if (*v < 1 || *v > int64_t{UINT32_MAX})
                r_.error(TomlReader::at(t, "max_connections"), "'max_connections' must be between 1 and 4294967295");
            else
                lim.max_connections = static_cast<uint32_t>(*v);
        }
        if (auto v = r_.integer(t, "max_connections_per_source", kLimits)) {
            if (*v < 0 || *v > int64_t{UINT32_MAX})
                r_.error(TomlReader::at(t, "max_connections_per_source"),
                         "'max_connections_per_source' must be between 0 (no limit) and 4294967295");
            else
                lim.max_connections_per_source = static_cast<uint32_t>(*v);
        }
        duration(t, "handshake_timeout", lim.handshake_timeout);
        duration(t, "idle_timeout", lim.idle_timeout);
        duration(t, "backend_connect_timeout", lim.backend_connect_timeout);
        duration(t, "drain_timeout", lim.drain_timeout);

        if (const toml::node* n = r_.get(t, "connection_buffer", kLimits, false)) {
            std::optional<uint64_t> bytes;
            if (auto* i = n->as_integer()) {
                if (i->get() >= 0) bytes = static_cast<uint64_t>(i->get());
            } else if (auto* s = n->as_string()) {
                std::string why;
                bytes = parse_size(s->get(), &why);
                if (!bytes) {
                    r_.error(n->source(),
                             "bad size " + in_quotes(s->get()) + " for 'connection_buffer': " + why);
                    return;
                }
            } else {
                return r_.type_error("connection_buffer", *n,
                                     "an integer or a size string such as \"64KiB\"");
            }
            if (!bytes || *bytes < 4 * 1024 || *bytes > 16 * 1024 * 1024)
                r_.error(n->source(), "'connection_buffer' must be between 4KiB and 16MiB");
            else
                lim.connection_buffer_bytes = static_cast<uint32_t>(*bytes);
        }
    }

    std::optional<SocketAddress> address(const std::string& text, const toml::source_region& where,
                                         bool backend) {
        std::string why;
        auto a = SocketAddress::parse(text, &why);
        if (!a) {
            r_.error(where, "bad address " + in_quotes(text) + ": " + why);
        } else if (backend && a->port() == 0) {
            r_.error(where, "bad address " + in_quotes(text) + ": a backend needs a port other than 0");
            a.reset();
        }
        return a;
    }

    void read_listener(const toml::table& t) {
        Listener l;
        l.loc = r_.loc(t.source());
        r_.check_keys(t, {"name", "address", "tls", "admission"}, kListener);
        if (auto v = r_.name(t, "name", kListener, true)) l.name = *v;
        if (auto v = r_.string(t, "address", kListener, true))
            if (auto a = address(*v, TomlReader::at(t, "address"), false)) l.address = *a;
        if (auto* tls = r_.table(t, "tls", kListener, true)) detail::read_tls(r_, *tls, base_dir_.string(), l.tls);
        if (auto* adm = r_.table(t, "admission", kListener)) detail::read_admission(r_, *adm, l.admission);
        p_.listeners.push_back(std::move(l));
    }

    void read_backend(const toml::table& t) {
        Backend b;
        b.loc = r_.loc(t.source());
        r_.check_keys(t, {"name", "address", "addresses", "proxy_protocol"}, kBackend);
        if (auto v = r_.name(t, "name", kBackend, true)) b.name = *v;
        if (auto i = r_.choice(t, "proxy_protocol", kBackend, {"off", "v2"}))
            b.proxy_protocol = static_cast<ProxyProtocol>(*i);
        bool has_one = t.contains("address"), has_many = t.contains("addresses");
        if (has_one && has_many) {
            r_.error(TomlReader::at(t, "address"), "use either 'address' or 'addresses', not both");
        } else if (has_one) {
            if (auto v = r_.string(t, "address", kBackend))
                if (auto a = address(*v, TomlReader::at(t, "address"), true)) b.addresses.push_back(*a);
        } else if (auto items = r_.strings(t, "addresses", kBackend, true)) {
            if (items->empty()) r_.error(TomlReader::at(t, "addresses"), "'addresses' must not be empty");
            for (const auto& item : *items)
                if (auto a = address(item.value, item.where, true)) b.addresses.push_back(*a);
        }
        p_.backends.push_back(std::move(b));
    }

    void read_route(const toml::table& t) {
        Route r;
        r.loc = r_.loc(t.source());
        r_.check_keys(t,
                      {"listener", "server_names", "default", "backend", "rules", "allow_length_change", "on_pause",
                       "pause"},
                      kRoute);
        if (auto v = r_.name(t, "listener", kRoute, false)) r.listener = *v;
        r.server_names = detail::read_server_names(r_, t, kRoute);
        if (auto v = r_.boolean(t, "default", kRoute)) r.is_default = *v;
        if (auto v = r_.name(t, "backend", kRoute, true)) r.backend = *v;
        if (auto items = r_.strings(t, "rules", kRoute)) {
            // References are resolved by validate() (quick mode builds them too); positions kept here.
            for (auto& item : *items) {
                r.rules.push_back(item.value);
                r.rule_locs.push_back(r_.loc(item.where));
            }
        }
        if (auto v = r_.boolean(t, "allow_length_change", kRoute)) r.allow_length_change = *v;
        if (auto i = r_.choice(t, "on_pause", kRoute, {"mask", "hold", "release"}))
            r.on_pause = static_cast<OnPause>(*i);
        duration(t, "pause", r.pause, kRoute);
        if (const toml::node* n = t.get("pause"); n && (r.pause < kMinPause || r.pause > kMaxPause))
            r_.error(n->source(), "'pause' must be between 1ms and 60s");
        p_.routes.push_back(std::move(r));
    }

    // Field-level checks only; the engine compiles the pattern in validate(), so a policy built in
    // code gets the same checks.
    void read_rule(const toml::table& t) {
        RedactRule rule;
        rule.loc = r_.loc(t.source());
        r_.check_keys(t, {"id", "direction", "pattern", "literal", "case_insensitive", "mask", "replacement"},
                      kRule);
        if (auto v = r_.name(t, "id", kRule, true)) rule.id = *v;
        if (auto i = r_.choice(t, "direction", kRule, {"request", "response", "both"}))
            rule.direction = static_cast<RuleDirection>(*i);
        bool has_pattern = t.contains("pattern"), has_literal = t.contains("literal");
        if (has_pattern && has_literal) {
            r_.error(TomlReader::at(t, "literal"), "use either 'pattern' or 'literal', not both");
        } else if (!has_pattern && !has_literal) {
            r_.error(t.source(), "[[rule]] needs 'pattern' (a regular expression) or 'literal'");
        }
        // With both, the pattern is still checked: its own mistakes are worth reporting in one pass.
        const char* key = has_pattern ? "pattern" : "literal";
        if (has_pattern || has_literal) {
            if (auto v = r_.string(t, key, kRule)) {
                rule.pattern = *v;
                rule.literal = !has_pattern;
                rule.pattern_loc = r_.loc(TomlReader::at(t, key));
            }
        }
        if (auto v = r_.boolean(t, "case_insensitive", kRule)) rule.case_insensitive = *v;
        if (auto v = r_.string(t, "mask", kRule)) {
            if (v->size() != 1)
                r_.error(TomlReader::at(t, "mask"), "'mask' must be exactly one byte, e.g. \"*\"");
            else
                rule.mask = (*v)[0];
        }
        if (auto v = r_.string(t, "replacement", kRule)) {
            if (t.contains("mask"))
                r_.error(TomlReader::at(t, "replacement"), "use either 'mask' or 'replacement', not both");
            rule.replacement = *v;
        }
        p_.rules.push_back(std::move(rule));
    }

    TomlReader r_;
    Policy& p_;
    fs::path base_dir_;
};

std::string lower_first(std::string_view s) {
    std::string r(s);
    if (!r.empty()) r[0] = detail::ascii_lower(r[0]);
    return r;
}

}  // namespace

LoadOutcome load_policy_text(std::string_view text, const std::string& path) {
    LoadOutcome out;
    // toml++ and std::filesystem report by exception; nothing may escape to the caller.
    try {
        toml::table root;
        try {
            root = toml::parse(text, std::string_view{path});
        } catch (const toml::parse_error& e) {
            const auto& b = e.source().begin;
            out.problems.push_back({SourceLoc{path, static_cast<int>(b.line), static_cast<int>(b.column)},
                                    lower_first(e.description())});
            return out;
        }
        Policy policy;
        policy.source = path;
        PolicyReader(path, out.problems, policy).read(root);
        auto semantic = detail::validate(policy, true);
        out.problems.insert(out.problems.end(), semantic.begin(), semantic.end());
        std::stable_sort(out.problems.begin(), out.problems.end(),
                         [](const Diagnostic& a, const Diagnostic& b) {
                             return std::pair(a.loc.line, a.loc.col) < std::pair(b.loc.line, b.loc.col);
                         });
        if (out.problems.empty()) out.policy = std::move(policy);
    } catch (const std::exception& e) {
        out.policy.reset();
        out.problems.push_back(
            {SourceLoc{path, 1, 1}, std::string("internal error while loading: ") + e.what()});
    }
    return out;
}

LoadOutcome load_policy_file(const std::string& path) {
    // Policies are small; a cap keeps a mistaken path (a disk image, /dev/zero) from eating memory.
    constexpr size_t max_size = 4 * 1024 * 1024;
    auto fail = [&](std::string why) {
        LoadOutcome out;
        out.problems.push_back({SourceLoc{path, 1, 1}, "cannot read policy file: " + why});
        return out;
    };
    try {
        std::error_code ec;
        if (fs::is_directory(path, ec)) return fail("is a directory");
        std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
        if (!f) return fail(std::strerror(errno));
        std::string text;
        char buf[16384];
        size_t n = 0;
        while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0 && text.size() <= max_size)
            text.append(buf, n);
        if (std::ferror(f.get())) return fail(std::strerror(errno));
        if (text.size() > max_size) return fail("larger than 4 MiB");
        return load_policy_text(text, path);
    } catch (const std::exception& e) {
        return fail(e.what());
    }
}

}  // namespace ztp::config
