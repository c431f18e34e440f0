// Quick mode: `ztproxy run --listen … --backend … --cert … --key …` builds the same Policy a
// file would, with one listener, one certificate, one backend and a default route.
#pragma once

#include <string>
#include <vector>

#include "config/policy.hpp"

namespace ztp::app {

struct QuickOptions {
    std::string listen;
    std::vector<std::string> backends;
    std::string cert;
    std::string key;
    std::vector<std::string> alpn;
    std::string min_version;   // "1.2" / "1.3", empty = default
    std::string max_version;
    std::string handshake_timeout;  // duration strings, empty = default
    std::string idle_timeout;
    std::string drain_timeout;
    std::string connection_buffer;  // size string
    std::string ktls;               // "auto" / "require" / "off", empty = auto
    std::string record_path;        // "auto" / "kernel" / "userspace" / "openssl", empty = auto
    std::vector<std::string> redact_request;   // regular expressions, masked with '*'
    std::vector<std::string> redact_response;
    std::string redact_on_pause;               // "mask" / "hold" / "release", empty = mask
    std::vector<std::string> allow;            // CIDRs ([listener.admission] allow / deny)
    std::vector<std::string> deny;
    std::string client_ca;         // mTLS: trusted client CAs (PEM); empty = no client certificates
    std::string client_auth;       // "optional" / "require" (the default with a CA)
    std::string proxy_protocol;    // "off" / "v2" towards the backend
    std::string session_ticket_keys;  // ticket key file; empty = generated keys
    int tls13_tickets = -1;        // TLS 1.3 tickets per full handshake; -1 = the default (1)
    std::string user;              // [process] user / group to switch to after binding
    std::string group;
    unsigned max_connections = 0;   // 0 = default
    unsigned max_connections_per_source = 0;  // 0 = no limit
    unsigned workers = 0;
};

// Problems are returned as human messages naming the flag (no file positions in quick mode).
config::Policy quick_policy(const QuickOptions& o, std::vector<std::string>& problems);

}  // namespace ztp::app
