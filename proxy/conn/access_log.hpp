// One access-log line per connection, written when it ends: who, what TLS, which record path in
// each direction, how many plaintext bytes, how long, and why it ended. Text (key=value) or JSON.
#pragma once

#include <cstdint>
#include <string>

#include "proxy/conn/relay.hpp"

namespace ztp::conn {

struct AccessRecord {
    std::string ts;  // when the connection ended (UTC)
    std::string client;
    std::string listener;
    unsigned worker = 0;  // the worker thread that served it (shows how connections are spread)
    std::string sni;
    std::string alpn;
    std::string version;
    std::string cipher;
    std::string client_subject;     // mTLS: the verified client certificate's subject (RFC 2253)
    std::string client_cert_error;  // mTLS: why the client certificate was refused
    std::string backend;
    std::string rx_path;  // record path decrypting client → backend
    std::string tx_path;  // record path encrypting backend → client
    std::string ktls_fallback;  // why kTLS was not used although the listener allowed it
    RelayCounters counters;     // plaintext bytes each way, and how they moved (splice / copy)
    uint64_t duration_ms = 0;
    std::string close;
};

std::string format_access_text(const AccessRecord& r);
std::string format_access_json(const AccessRecord& r);
void write_access_log(const AccessRecord& r);  // in the configured log format

}  // namespace ztp::conn
