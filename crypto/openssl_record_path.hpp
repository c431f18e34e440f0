// The OpenSSL record path: SSL_read/SSL_write on the non-blocking client socket. It is the
// reference the kernel and userspace paths are tested against.
#pragma once

#include <openssl/ssl.h>

#include "crypto/record_path.hpp"

namespace ztp::crypto {

class OpenSslRecordPath final : public RecordPath {
public:
    // The connection owns the SSL. Built once the handshake is done and the session stays with
    // OpenSSL: read-ahead then fills OpenSSL's buffer with whatever the socket holds in one read(),
    // instead of a read() for each record's header and another for its body. Not before on a
    // listener that may hand sessions over (to the kernel or our record layer): bytes read ahead
    // could not be given back. A listener whose record path is always OpenSSL reads ahead from the
    // first byte (Connection::start).
    explicit OpenSslRecordPath(SSL* ssl) : ssl_(ssl) { SSL_set_read_ahead(ssl_, 1); }

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
