// The OpenSSL record path: SSL_read/SSL_write on the non-blocking client socket. It is the
// reference the kernel and userspace paths are tested against.
#pragma once

#include <openssl/ssl.h>

#include "crypto/record_path.hpp"

namespace ztp::crypto {

class OpenSslRecordPath final : public RecordPath {
public:
    explicit OpenSslRecordPath(SSL* ssl) : ssl_(ssl) {}  // the connection owns the SSL

    const char* rx_name() const override { return "openssl"; }
    const char* tx_name() const override { return "openssl"; }
    bool copies_plaintext() const override { return true; }
    IoResult read(std::span<std::byte> out) override;
    IoResult write(std::span<const std::byte> in) override;
    IoResult shutdown_write() override;

private:
    IoResult classify(int rc, const char* op);
    SSL* ssl_;
};

}  // namespace ztp::crypto
