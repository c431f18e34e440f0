#include "proxy/app/quick_policy.hpp"

#include <filesystem>

#include "config/units.hpp"
#include "proxy/redact/rule_set.hpp"

namespace ztp::app {

namespace {

bool parse_version(const std::string& s, config::TlsVersion& out) {
    if (s == "1.2") out = config::TlsVersion::tls1_2;
    else if (s == "1.3") out = config::TlsVersion::tls1_3;
    else return false;
    return true;
}

}  // namespace

config::Policy quick_policy(const QuickOptions& o, std::vector<std::string>& problems) {
    config::Policy p;
    p.source = "<command line>";
    config::Listener l;
    l.name = "default";
    std::string why;
    if (auto a = SocketAddress::parse(o.listen, &why)) l.address = *a;
    else problems.push_back("--listen '" + o.listen + "': " + why);
    config::Certificate c;
    c.name = "default";
    c.cert_file = std::filesystem::absolute(o.cert).string();
    c.key_file = std::filesystem::absolute(o.key).string();
    l.tls.certificates.push_back(c);
    l.tls.alpn = o.alpn;
    if (!o.min_version.empty() && !parse_version(o.min_version, l.tls.min_version))
        problems.push_back("--tls-min must be 1.2 or 1.3");
    if (!o.max_version.empty() && !parse_version(o.max_version, l.tls.max_version))
        problems.push_back("--tls-max must be 1.2 or 1.3");
    if (o.ktls == "require") l.tls.ktls = config::KtlsMode::require;
    else if (o.ktls == "off") l.tls.ktls = config::KtlsMode::off;
    else if (!o.ktls.empty() && o.ktls != "auto") problems.push_back("--ktls must be auto, require or off");
    if (o.record_path == "kernel") l.tls.record_path = config::RecordPathMode::kernel;
    else if (o.record_path == "userspace") l.tls.record_path = config::RecordPathMode::userspace;
    else if (o.record_path == "openssl") l.tls.record_path = config::RecordPathMode::openssl;
    else if (!o.record_path.empty() && o.record_path != "auto")
        problems.push_back("--record-path must be auto, kernel, userspace or openssl");
    auto cidrs = [&](const char* flag, const std::vector<std::string>& in, std::vector<bpf::Cidr>& out) {
        for (const auto& text : in) {
            if (auto c = bpf::Cidr::parse(text, &why)) out.push_back(*c);
            else problems.push_back(std::string(flag) + " '" + text + "': " + why);
        }
    };
    if (!o.client_ca.empty()) {
        l.tls.client_ca = std::filesystem::absolute(o.client_ca).string();
        l.tls.client_auth = config::ClientAuth::require;
    }
    if (o.client_auth == "optional") l.tls.client_auth = config::ClientAuth::optional;
    else if (!o.client_auth.empty() && o.client_auth != "require")
        problems.push_back("--client-auth must be optional or require");
    if (!o.client_auth.empty() && o.client_ca.empty()) problems.push_back("--client-auth needs --client-ca");
    if (!o.session_ticket_keys.empty())
        l.tls.session_ticket_keys = std::filesystem::absolute(o.session_ticket_keys).string();
    if (o.tls13_tickets > static_cast<int>(config::kMaxTls13Tickets) || o.tls13_tickets < -1)
        problems.push_back("--tls13-tickets must be between 0 and " + std::to_string(config::kMaxTls13Tickets));
    else if (o.tls13_tickets >= 0)
        l.tls.tls13_tickets = static_cast<unsigned>(o.tls13_tickets);
    cidrs("--allow", o.allow, l.admission.allow);
    cidrs("--deny", o.deny, l.admission.deny);
    p.listeners.push_back(l);

    config::Backend b;
    b.name = "default";
    for (const auto& s : o.backends) {
        if (auto a = SocketAddress::parse(s, &why)) b.addresses.push_back(*a);
        else problems.push_back("--backend '" + s + "': " + why);
    }
    if (o.proxy_protocol == "v2") b.proxy_protocol = config::ProxyProtocol::v2;
    else if (!o.proxy_protocol.empty() && o.proxy_protocol != "off")
        problems.push_back("--proxy-protocol must be off or v2");
    p.backends.push_back(b);
    config::Route r;
    r.is_default = true;
    r.backend = "default";
    for (auto& rule : redact::quick_rules(o.redact_request, o.redact_response)) {
        r.rules.push_back(rule.id);
        p.rules.push_back(std::move(rule));
    }
    if (o.redact_on_pause == "hold") r.on_pause = config::OnPause::hold;
    else if (o.redact_on_pause == "release") r.on_pause = config::OnPause::release;
    else if (!o.redact_on_pause.empty() && o.redact_on_pause != "mask")
        problems.push_back("--redact-on-pause must be mask, hold or release");
    p.routes.push_back(r);

    auto duration = [&](const std::string& flag, const std::string& v, std::chrono::milliseconds& out) {
        if (v.empty()) return;
        if (auto d = config::parse_duration(v, &why)) out = *d;
        else problems.push_back(flag + " '" + v + "': " + why);
    };
    duration("--handshake-timeout", o.handshake_timeout, p.limits.handshake_timeout);
    duration("--idle-timeout", o.idle_timeout, p.limits.idle_timeout);
    duration("--drain-timeout", o.drain_timeout, p.limits.drain_timeout);
    if (!o.connection_buffer.empty()) {
        if (auto s = config::parse_size(o.connection_buffer, &why)) p.limits.connection_buffer_bytes = static_cast<uint32_t>(*s);
        else problems.push_back("--connection-buffer '" + o.connection_buffer + "': " + why);
    }
    if (o.max_connections) p.limits.max_connections = o.max_connections;
    p.limits.max_connections_per_source = o.max_connections_per_source;
    p.runtime.workers = o.workers;
    p.process.user = o.user;
    p.process.group = o.group;
    return p;
}

}  // namespace ztp::app
