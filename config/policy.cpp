#include "config/policy.hpp"

namespace ztp::config {

std::string SourceLoc::str() const {
    if (file.empty()) return "<builtin>";
    return file + ":" + std::to_string(line) + ":" + std::to_string(col);
}

const char* to_string(TlsVersion v) { return v == TlsVersion::tls1_2 ? "1.2" : "1.3"; }

const char* to_string(Cipher c) {
    switch (c) {
        case Cipher::aes_128_gcm: return "AES-128-GCM";
        case Cipher::aes_256_gcm: return "AES-256-GCM";
        case Cipher::chacha20_poly1305: return "CHACHA20-POLY1305";
    }
    return "?";
}

const char* to_string(LogFormat f) { return f == LogFormat::text ? "text" : "json"; }

const char* to_string(RecordPathMode m) {
    switch (m) {
        case RecordPathMode::automatic: return "auto";
        case RecordPathMode::kernel: return "kernel";
        case RecordPathMode::userspace: return "userspace";
        case RecordPathMode::openssl: return "openssl";
    }
    return "?";
}

const char* to_string(KtlsMode m) {
    switch (m) {
        case KtlsMode::automatic: return "auto";
        case KtlsMode::require: return "require";
        case KtlsMode::off: return "off";
    }
    return "?";
}

const char* to_string(SeccompMode m) {
    switch (m) {
        case SeccompMode::automatic: return "auto";
        case SeccompMode::require: return "require";
        case SeccompMode::log: return "log";
        case SeccompMode::off: return "off";
    }
    return "?";
}

const char* to_string(ClientAuth a) {
    switch (a) {
        case ClientAuth::none: return "none";
        case ClientAuth::optional: return "optional";
        case ClientAuth::require: return "require";
    }
    return "?";
}

const char* to_string(ProxyProtocol p) { return p == ProxyProtocol::off ? "off" : "v2"; }

const char* to_string(OnPause m) {
    switch (m) {
        case OnPause::mask: return "mask";
        case OnPause::hold: return "hold";
        case OnPause::release: return "release";
    }
    return "?";
}

const char* to_string(RuleDirection d) {
    switch (d) {
        case RuleDirection::request: return "request";
        case RuleDirection::response: return "response";
        case RuleDirection::both: return "both";
    }
    return "?";
}

const RedactRule* Policy::find_rule(std::string_view id) const {
    for (const auto& r : rules)
        if (r.id == id) return &r;
    return nullptr;
}

const Backend* Policy::find_backend(std::string_view name) const {
    for (const auto& b : backends)
        if (b.name == name) return &b;
    return nullptr;
}

bool server_name_matches(std::string_view pattern, std::string_view name) {
    if (pattern.size() > 2 && pattern.substr(0, 2) == "*.") {
        auto suffix = pattern.substr(1);  // ".example.com"
        if (name.size() <= suffix.size()) return false;
        if (name.substr(name.size() - suffix.size()) != suffix) return false;
        auto label = name.substr(0, name.size() - suffix.size());
        return label.find('.') == std::string_view::npos;
    }
    return pattern == name;
}

}  // namespace ztp::config
