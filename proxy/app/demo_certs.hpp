// Throwaway certificates for `ztproxy demo`: a CA and a localhost server certificate signed by it,
// generated in-process with OpenSSL 3 (ECDSA P-256) and written as PEM files.
#pragma once

#include <filesystem>

#include "proxy/base/result.hpp"

namespace ztp::app {

struct DemoCerts {
    std::filesystem::path ca_cert;      // PEM, the CA a client passes to curl --cacert
    std::filesystem::path server_cert;  // PEM, leaf (SAN DNS:localhost, IP:127.0.0.1)
    std::filesystem::path server_key;   // PEM (PKCS#8), mode 0600
};

// Creates `dir` if needed and writes ca.pem, server.pem and server.key into it (overwriting).
// Each call makes a fresh CA; certificates are valid for 30 days from now.
Result<DemoCerts> generate_demo_certs(const std::filesystem::path& dir);

}  // namespace ztp::app
