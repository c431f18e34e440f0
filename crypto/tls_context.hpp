// ServerTlsContext: everything OpenSSL needs to terminate TLS for one listener. One SSL_CTX per
// configured certificate (same settings); the SNI callback switches the connection to the
// certificate whose server_names match, else the listener's default certificate.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/policy.hpp"
#include "config/policy_loader.hpp"
#include "proxy/base/c_deleters.hpp"

namespace ztp::crypto {

class ServerTlsContext {
public:
    // Decides whether a handshake may go on for this SNI value (empty = no SNI sent). Returning
    // false aborts the handshake with an unrecognized_name alert before any certificate is sent,
    // so clients for names we do not route never cost a full handshake.
    using ServerNameFilter = std::function<bool(std::string_view server_name)>;

    // Builds the contexts: reads and checks every certificate and key. Problems are appended
    // (positioned at the certificate's or listener's policy location); returns null if any.
    static std::shared_ptr<ServerTlsContext> build(const config::Listener& listener, ServerNameFilter filter,
                                                   std::vector<config::Diagnostic>& problems);

    ~ServerTlsContext();
    ServerTlsContext(const ServerTlsContext&) = delete;
    ServerTlsContext& operator=(const ServerTlsContext&) = delete;

    // A new server-side SSL for an accepted socket (non-blocking fd; the SSL does not own it).
    SslPtr new_session(int fd) const;
    // The context whose session cache holds the sessions of new_session()'s SSLs (OpenSSL keeps
    // the context an SSL started on as its session context, across an SNI switch).
    SSL_CTX* session_cache_ctx() const;

private:
    struct Entry;
    ServerTlsContext() = default;
    static int on_server_name(SSL* ssl, int* alert, void* arg);
    static int on_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                       unsigned int inlen, void* arg);
    const Entry* select(std::string_view server_name) const;

    std::vector<std::unique_ptr<Entry>> entries_;
    const Entry* default_entry_ = nullptr;
    std::vector<unsigned char> alpn_wire_;  // server preference order, wire format
    ServerNameFilter filter_;
};

}  // namespace ztp::crypto
