// The policy model: plain structs, no toml++ and no OpenSSL. The loader (policy_loader.hpp) fills
// it from a TOML file; quick mode and `ztproxy demo` fill it in code. Everything downstream
// (crypto contexts, listeners, routes) reads only this.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bpf/cidr.hpp"
#include "proxy/base/socket_address.hpp"

namespace ztp::config {

// Where a value came from, so `ztproxy check` can say file:line:col. Empty file = built in code.
struct SourceLoc {
    std::string file;
    int line = 0;
    int col = 0;
    std::string str() const;  // "file:line:col" (or "<builtin>")
};

enum class TlsVersion { tls1_2, tls1_3 };
// Only AEADs the kernel's TLS offload implements (so every connection can take the kTLS path).
enum class Cipher { aes_128_gcm, aes_256_gcm, chacha20_poly1305 };
enum class LogFormat { text, json };
// Whether record crypto may move into the kernel after the handshake. auto: where the kernel
// and cipher allow, else fall back per connection (counted, with the reason); require: refuse
// connections that cannot use it (and refuse to start on a kernel without kTLS); off: never.
enum class KtlsMode { automatic, require, off };
// Who does the record crypto after the handshake. auto: the kernel where kTLS can take the
// session (and `ktls` allows it), else ztproxy's gated userspace record layer; kernel: kTLS only;
// userspace: always the gated record layer; openssl: SSL_read/SSL_write (the reference path).
enum class RecordPathMode { automatic, kernel, userspace, openssl };
// Client certificates (mTLS). none: never asked for; optional: asked for, a connection without one
// goes on, but one that is presented must verify; require: a connection without a valid one is
// refused during the handshake.
enum class ClientAuth { none, optional, require };
inline constexpr unsigned kMaxVerifyDepth = 16;  // longer chains are a verification-cost DoS, not a real PKI
// What ztproxy writes to a backend before the first relayed byte: nothing, or a PROXY protocol v2
// header (client and listener addresses, TLS facts, client certificate identity).
enum class ProxyProtocol { off, v2 };

const char* to_string(TlsVersion v);  // "1.2" / "1.3"
const char* to_string(Cipher c);      // "AES-128-GCM" ...
const char* to_string(LogFormat f);   // "text" / "json"
const char* to_string(KtlsMode m);    // "auto" / "require" / "off"
const char* to_string(RecordPathMode m);  // "auto" / "kernel" / "userspace" / "openssl"
const char* to_string(ClientAuth a);      // "none" / "optional" / "require"
const char* to_string(ProxyProtocol p);   // "off" / "v2"
// The system-call allow-list ztproxy installs once it is serving (proxy/app/seccomp_filter.hpp).
// auto: where the kernel supports seccomp filters, else a warning; require: refuse to start
// without; log: calls outside the list are allowed and logged by the kernel (to find what a new
// deployment needs); off: no filter.
enum class SeccompMode { automatic, require, log, off };
const char* to_string(SeccompMode m);  // "auto" / "require" / "log" / "off"

struct Certificate {
    std::string name;                       // referenced by tls.default_certificate
    std::string cert_file;                  // PEM chain, leaf first (absolute after loading)
    std::string key_file;                   // PEM private key (absolute after loading)
    std::vector<std::string> server_names;  // exact names or "*.suffix" wildcards, lower case
    SourceLoc loc;
    SourceLoc cert_loc;                     // the cert and key values; empty file = not from a file
    SourceLoc key_loc;
    const SourceLoc& cert_at() const { return cert_loc.file.empty() ? loc : cert_loc; }
    const SourceLoc& key_at() const { return key_loc.file.empty() ? loc : key_loc; }
};

struct TlsSettings {
    std::vector<Certificate> certificates;  // at least one
    std::string default_certificate;        // name; empty = the first certificate
    TlsVersion min_version = TlsVersion::tls1_2;
    TlsVersion max_version = TlsVersion::tls1_3;
    std::vector<Cipher> ciphers{Cipher::aes_128_gcm, Cipher::aes_256_gcm, Cipher::chacha20_poly1305};
    std::vector<std::string> alpn;          // server preference order; empty = no ALPN
    bool session_tickets = true;
    KtlsMode ktls = KtlsMode::automatic;
    RecordPathMode record_path = RecordPathMode::automatic;
    SourceLoc loc;
    ClientAuth client_auth = ClientAuth::none;
    std::string client_ca{};                // PEM bundle of trusted client CAs (absolute after loading)
    unsigned verify_depth = 4;              // intermediates allowed between the leaf and a trusted CA
    SourceLoc client_ca_loc{};              // the client_ca value; empty file = not from a file
};

// [listener.admission]: which clients may open connections to this listener, and how fast. The
// kernel enforces it before the handshake (bpf/admission.bpf.c), or user space right after accept
// where BPF cannot load (bpf/admission_fallback.hpp). Deny wins; an empty allow list admits every
// address; rate_per_second = 0 (and burst = 0) means no rate limit. The listener builds
// bpf::AdmissionPolicy{allow, deny, rate_per_second, burst, ipv6_rate_prefix, ipv4_rate_prefix}
// from these fields one to one.
struct Admission {
    std::vector<bpf::Cidr> allow;          // networks; IPv4 rules also match IPv4-mapped IPv6 peers
    std::vector<bpf::Cidr> deny;
    uint32_t rate_per_second = 0;          // new connections per second per source prefix
    uint32_t burst = 0;                    // connections a source may open at once (>= 1 with a rate)
    unsigned ipv6_rate_prefix = bpf::kDefaultIpv6RatePrefix;  // the rate's source: an IPv6 /N (32..128)
    unsigned ipv4_rate_prefix = bpf::kDefaultIpv4RatePrefix;  // and an IPv4 /N (16..32)
    SourceLoc loc;                         // the [listener.admission] table; empty file = not from a file
    std::vector<SourceLoc> allow_locs{};   // parallel to allow/deny when loaded from a file; may be empty
    std::vector<SourceLoc> deny_locs{};

    bool enabled() const { return !allow.empty() || !deny.empty() || rate_per_second != 0; }
};

struct Listener {
    std::string name;
    SocketAddress address;
    TlsSettings tls;
    SourceLoc loc;
    Admission admission{};  // not enabled() unless configured
};

struct Backend {
    std::string name;
    std::vector<SocketAddress> addresses;  // tried round-robin, next one on connect failure
    SourceLoc loc;
    ProxyProtocol proxy_protocol = ProxyProtocol::off;
};

// Which plaintext a redaction rule inspects: request = client → backend, response = backend → client.
enum class RuleDirection { request, response, both };
const char* to_string(RuleDirection d);  // "request" / "response" / "both"

// One [[rule]]: bytes of the decrypted stream that must not pass. Matches are replaced before they
// reach the other side (proxy/redact). Quick mode fills id, direction and pattern (mask '*').
struct RedactRule {
    std::string id;                          // unique; routes refer to it
    RuleDirection direction = RuleDirection::both;
    std::string pattern;                     // Hyperscan regex, or the exact bytes when `literal`
    bool literal = false;
    bool case_insensitive = false;
    char mask = '*';                         // same-length mask (when there is no replacement)
    std::optional<std::string> replacement;  // a fixed string instead of the mask
    SourceLoc loc;                           // the [[rule]] table
    SourceLoc pattern_loc{};                 // the pattern/literal value: engine errors point here
};

struct Route {
    std::string listener;                   // listener name; empty = every listener
    std::vector<std::string> server_names;  // SNI values (exact or "*.suffix"); empty with is_default
    bool is_default = false;                // taken when no server_names route matches
    std::string backend;                    // backend name
    SourceLoc loc;
    // Redaction rule ids, in priority order (first wins where matches of two rules overlap). A
    // route with rules takes the rewrite relay: its plaintext cannot be spliced.
    std::vector<std::string> rules{};
    std::vector<SourceLoc> rule_locs{};     // parallel to `rules` when loaded from a file; may be empty
    bool allow_length_change = false;       // replacements may change the stream's length
};

struct Limits {
    uint32_t max_connections = 10000;                      // per process
    uint32_t max_connections_per_source = 0;               // per client address; 0 = no limit
    std::chrono::milliseconds handshake_timeout{10'000};
    std::chrono::milliseconds idle_timeout{300'000};
    std::chrono::milliseconds backend_connect_timeout{5'000};
    std::chrono::milliseconds drain_timeout{30'000};       // graceful shutdown deadline
    uint32_t connection_buffer_bytes = 64 * 1024;          // per direction, per connection
    SourceLoc loc;
};

struct Logging {
    std::string level = "info";   // trace, debug, info, warn, error, off
    LogFormat format = LogFormat::text;
    bool access_log = true;
    SourceLoc loc;
};

struct Runtime {
    unsigned workers = 0;  // 0 = one per CPU
    SourceLoc loc;
};

// [process]: what the process gives up once its listeners are bound (proxy/app/privileges.hpp).
struct Process {
    std::string user;   // name or numeric uid to switch to; empty = stay who ztproxy was started as
    std::string group;  // name or numeric gid; empty = the user's primary group (needs user)
    SeccompMode seccomp = SeccompMode::automatic;
    SourceLoc loc;
};

// [admin]: the operator's HTTP endpoint (/metrics, /healthz, /ready, POST /reload). Off unless an
// address is given (here or with --admin, which wins).
struct Admin {
    std::optional<SocketAddress> address;
    SourceLoc loc;
};

struct Policy {
    std::string source;  // file path, or "<quick>" / "<demo>"
    std::vector<Listener> listeners;
    std::vector<Backend> backends;
    std::vector<Route> routes;
    std::vector<RedactRule> rules{};
    Limits limits;
    Logging logging;
    Runtime runtime;
    Process process{};
    Admin admin{};

    const Backend* find_backend(std::string_view name) const;
    const RedactRule* find_rule(std::string_view id) const;
};

// Does `name` (an SNI value, lower case) match `pattern` (exact, or "*.example.com" matching
// exactly one extra label)? Shared by certificate and route selection so both agree.
bool server_name_matches(std::string_view pattern, std::string_view name);

}  // namespace ztp::config
