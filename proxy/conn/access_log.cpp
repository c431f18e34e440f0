#include "proxy/conn/access_log.hpp"

#include <nlohmann/json.hpp>

#include "proxy/base/log.hpp"

namespace ztp::conn {

namespace {

// Values can come from the peer (SNI, ALPN): quote and escape so they can never forge fields.
void append_value(std::string& out, const std::string& v) {
    bool plain = !v.empty();
    for (unsigned char c : v)
        if (c <= ' ' || c == '"' || c == '\\' || c == '=' || c >= 0x7f) plain = false;
    if (plain) {
        out += v;
        return;
    }
    out += '"';
    for (unsigned char c : v) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < ' ' || c >= 0x7f) {
            char buf[5];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
}

}  // namespace

std::string format_access_text(const AccessRecord& r) {
    std::string out = "access";
    auto field = [&](const char* k, const std::string& v) {
        out += ' ';
        out += k;
        out += '=';
        append_value(out, v);
    };
    if (!r.ts.empty()) field("ts", r.ts);
    field("client", r.client);
    field("listener", r.listener);
    field("worker", std::to_string(r.worker));
    field("sni", r.sni);
    field("alpn", r.alpn);
    field("version", r.version);
    field("cipher", r.cipher);
    if (!r.client_subject.empty()) field("client_subject", r.client_subject);
    if (!r.client_cert_error.empty()) field("client_cert_error", r.client_cert_error);
    field("backend", r.backend);
    field("rx_path", r.rx_path);
    field("tx_path", r.tx_path);
    if (!r.ktls_fallback.empty()) field("ktls_fallback", r.ktls_fallback);
    field("bytes_up", std::to_string(r.counters.bytes_up));
    field("bytes_down", std::to_string(r.counters.bytes_down));
    field("spliced_up", std::to_string(r.counters.spliced_up));
    field("spliced_down", std::to_string(r.counters.spliced_down));
    field("copied_up", std::to_string(r.counters.copied_up));
    field("copied_down", std::to_string(r.counters.copied_down));
    field("duration_ms", std::to_string(r.duration_ms));
    field("close", r.close);
    return out;
}

std::string format_access_json(const AccessRecord& r) {
    nlohmann::json j = {
        {"ts", r.ts},
        {"client", r.client},   {"listener", r.listener},     {"worker", r.worker},
        {"sni", r.sni},
        {"alpn", r.alpn},       {"version", r.version},       {"cipher", r.cipher},
        {"client_subject", r.client_subject},     {"client_cert_error", r.client_cert_error},
        {"backend", r.backend}, {"rx_path", r.rx_path},       {"tx_path", r.tx_path},
        {"ktls_fallback", r.ktls_fallback},
        {"bytes_up", r.counters.bytes_up},         {"bytes_down", r.counters.bytes_down},
        {"spliced_up", r.counters.spliced_up},     {"spliced_down", r.counters.spliced_down},
        {"copied_up", r.counters.copied_up},       {"copied_down", r.counters.copied_down},
        {"duration_ms", r.duration_ms},
        {"close", r.close},
    };
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void write_access_log(const AccessRecord& r) {
    auto line = log::format() == log::Format::json ? format_access_json(r) : format_access_text(r);
    log::access()->info("{}", line);
}

}  // namespace ztp::conn
