#include "config/tls_section.hpp"

#include <algorithm>
#include <iterator>
#include <optional>

namespace ztp::config::detail {

namespace {

constexpr std::string_view kTls = "[listener.tls]";
constexpr std::string_view kCert = "[[listener.tls.certificate]]";

bool fail(std::string* why, std::string message) {
    *why = std::move(message);
    return false;
}

// Server names as they appear in SNI: lower-case DNS labels, with "*." allowed only in front.
bool normalize_server_name(std::string& name, std::string* why) {
    name = ascii_lowercase(name);
    if (name.empty()) return fail(why, "must not be empty");
    if (name.size() > 253) return fail(why, "longer than 253 characters");
    std::string_view rest = name;
    if (rest.substr(0, 2) == "*.") rest.remove_prefix(2);
    if (rest.find('*') != std::string_view::npos)
        return fail(why, "'*' is only allowed as a leading '*.'");
    if (rest.empty()) return fail(why, "nothing after '*.'");
    size_t label = 0;
    for (char c : rest) {
        if (c == '.') {
            if (label == 0) return fail(why, "empty label");
            label = 0;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (!ok) return fail(why, "unexpected character " + in_quotes(std::string(1, c)));
        if (++label > 63) return fail(why, "label longer than 63 characters");
    }
    if (label == 0) return fail(why, "must not end with '.'");
    return true;
}

std::optional<TlsVersion> version(TomlReader& r, const toml::table& t, std::string_view key) {
    auto v = r.string(t, key, kTls);
    if (!v) return std::nullopt;
    if (*v == "1.2") return TlsVersion::tls1_2;
    if (*v == "1.3") return TlsVersion::tls1_3;
    r.error(TomlReader::at(t, key), in_quotes(key) + " must be \"1.2\" or \"1.3\"");
    return std::nullopt;
}

Certificate read_certificate(TomlReader& r, const toml::table& t, const std::string& base_dir) {
    auto at = [&](std::string_view key) -> const toml::source_region& { return TomlReader::at(t, key); };
    Certificate c;
    c.loc = r.loc(t.source());
    r.check_keys(t, {"name", "cert", "key", "server_names"}, kCert);
    if (auto v = r.name(t, "name", kCert, true)) c.name = *v;
    // A file that cannot be read or does not match is reported at its value, not the table.
    if (auto v = r.name(t, "cert", kCert, true)) {
        c.cert_file = resolve_path(base_dir, *v);
        c.cert_loc = r.loc(at("cert"));
    }
    if (auto v = r.name(t, "key", kCert, true)) {
        c.key_file = resolve_path(base_dir, *v);
        c.key_loc = r.loc(at("key"));
    }
    c.server_names = read_server_names(r, t, kCert);
    return c;
}

}  // namespace

std::vector<std::string> read_server_names(TomlReader& r, const toml::table& t, std::string_view where) {
    std::vector<std::string> names;
    auto items = r.strings(t, "server_names", where);
    if (!items) return names;
    for (auto& item : *items) {
        std::string why;
        std::string n = item.value;
        if (!normalize_server_name(n, &why))
            r.error(item.where, "bad server name " + in_quotes(item.value) + ": " + why);
        // Kept even when bad (the load fails anyway), so the route does not look name-less.
        names.push_back(std::move(n));
    }
    return names;
}

void read_tls(TomlReader& r, const toml::table& t, const std::string& base_dir, TlsSettings& tls) {
    auto at = [&](std::string_view key) -> const toml::source_region& { return TomlReader::at(t, key); };
    tls.loc = r.loc(t.source());
    r.check_keys(t,
                 {"min_version", "max_version", "ciphers", "alpn", "session_tickets", "tls13_tickets",
                  "session_ticket_keys", "ktls", "record_path", "client_auth", "client_ca", "verify_depth",
                  "default_certificate", "certificate"},
                 kTls);
    if (auto v = version(r, t, "min_version")) tls.min_version = *v;
    if (auto v = version(r, t, "max_version")) tls.max_version = *v;
    if (auto items = r.strings(t, "ciphers", kTls)) {
        tls.ciphers.clear();
        if (items->empty()) r.error(at("ciphers"), "'ciphers' must not be empty");
        for (const auto& item : *items) {
            static constexpr Cipher all[] = {Cipher::aes_128_gcm, Cipher::aes_256_gcm, Cipher::chacha20_poly1305};
            auto it = std::find_if(std::begin(all), std::end(all), [&](Cipher c) {
                return ascii_lowercase(to_string(c)) == ascii_lowercase(item.value);
            });
            if (it == std::end(all))
                r.error(item.where, "unknown cipher " + in_quotes(item.value) +
                                        " (use AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305)");
            else if (std::find(tls.ciphers.begin(), tls.ciphers.end(), *it) != tls.ciphers.end())
                r.error(item.where, "cipher " + in_quotes(to_string(*it)) + " listed twice");
            else
                tls.ciphers.push_back(*it);
        }
    }
    if (auto items = r.strings(t, "alpn", kTls)) {
        for (const auto& item : *items) {
            if (item.value.empty() || item.value.size() > 255)
                r.error(item.where, "ALPN protocol " + in_quotes(item.value) + " must be 1 to 255 bytes long");
            else
                tls.alpn.push_back(item.value);
        }
    }
    if (auto v = r.boolean(t, "session_tickets", kTls)) tls.session_tickets = *v;
    if (auto v = r.integer(t, "tls13_tickets", kTls)) {
        if (*v < 0 || *v > kMaxTls13Tickets)
            r.error(at("tls13_tickets"), "'tls13_tickets' must be between 0 and " + std::to_string(kMaxTls13Tickets));
        else if (!tls.session_tickets && *v != 0)
            r.error(at("tls13_tickets"), "'tls13_tickets' needs session_tickets = true (or 0)");
        else
            tls.tls13_tickets = static_cast<unsigned>(*v);
    }
    // The file itself is read (and its problems reported at this value) by the crypto layer.
    if (auto v = r.name(t, "session_ticket_keys", kTls, false)) {
        if (!tls.session_tickets)
            r.error(at("session_ticket_keys"), "'session_ticket_keys' needs session_tickets = true");
        tls.session_ticket_keys = resolve_path(base_dir, *v);
        tls.session_ticket_keys_loc = r.loc(at("session_ticket_keys"));
    }
    // The option lists are in enum order: the index is the value.
    if (auto i = r.choice(t, "ktls", kTls, {"auto", "require", "off"})) tls.ktls = static_cast<KtlsMode>(*i);
    if (auto i = r.choice(t, "record_path", kTls, {"auto", "kernel", "userspace", "openssl"}))
        tls.record_path = static_cast<RecordPathMode>(*i);
    auto auth = r.choice(t, "client_auth", kTls, {"none", "optional", "require"});
    if (auth) tls.client_auth = static_cast<ClientAuth>(*auth);
    // After a bad client_auth the CA is left out: "client_ca without client_auth" would only
    // repeat the mistake already reported at the value.
    if (auto v = r.name(t, "client_ca", kTls, false); v && (auth || !t.contains("client_auth"))) {
        tls.client_ca = resolve_path(base_dir, *v);
        tls.client_ca_loc = r.loc(at("client_ca"));
    }
    if (auto v = r.integer(t, "verify_depth", kTls)) {
        if (*v < 0 || *v > kMaxVerifyDepth)
            r.error(at("verify_depth"), "'verify_depth' must be between 0 and " + std::to_string(kMaxVerifyDepth));
        else
            tls.verify_depth = static_cast<unsigned>(*v);
    }
    if (auto v = r.name(t, "default_certificate", kTls, false)) tls.default_certificate = *v;

    auto certs = r.tables(t, "certificate", kTls, "listener.tls.certificate", true);
    if (const toml::node* n = t.get("certificate"); n && n->is_array() && n->as_array()->empty())
        r.error(n->source(), "'certificate' must list at least one certificate");
    for (auto* c : certs) tls.certificates.push_back(read_certificate(r, *c, base_dir));
}

}  // namespace ztp::config::detail
