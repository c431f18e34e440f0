// RecordPath: the seam between the relay and whatever does the TLS record crypto for one
// connection. The relay only ever sees plaintext through it. Implementations: OpenSSL
// (SSL_read/SSL_write, the reference path), and later the kernel (kTLS) and ztproxy's own gated
// userspace record layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "crypto/record_errors.hpp"

namespace ztp::crypto {

enum class IoStatus {
    ok,          // `bytes` moved
    want_read,   // wait until the socket is readable, then call again
    want_write,  // wait until the socket is writable, then call again
    eof,         // peer sent close_notify (orderly end of its direction)
    eof_unclean, // peer closed TCP without close_notify (possible truncation; treated as end)
    peer_alert,  // peer sent a fatal alert (or a warning other than close_notify)
    bad_record,  // a record failed authentication: nothing of it was released
    malformed_record,  // a record was refused at its header (type, version, length); close_reason says how
    error,       // fatal for the connection; `reason` says why
};

struct IoResult {
    IoResult(IoStatus s, size_t n = 0, std::string why = {}, int err = 0, const char* close = nullptr)
        : status(s), bytes(n), reason(std::move(why)), sys_errno(err), close_reason(close) {}

    IoStatus status;
    size_t bytes = 0;
    std::string reason;  // for error: what failed, without payload bytes
    int sys_errno = 0;   // for error: the socket errno when it was a socket failure
    const char* close_reason = nullptr;  // for error: a specific access-log close reason, if any
    // The client broke the record protocol (crypto/record_errors.hpp): close_reason is the row's, and
    // the path has already tried to send the row's alert.
    std::optional<RecordError> record_error;
};

class RecordPath {
public:
    virtual ~RecordPath() = default;
    virtual const char* rx_name() const = 0;  // what decrypts client→backend: "openssl", "kernel", …
    virtual const char* tx_name() const = 0;  // what encrypts backend→client
    // Whether plaintext is copied in user space on its way through (OpenSSL decrypts into and
    // encrypts from buffers of its own; the kernel path hands it over without a user-space copy).
    virtual bool copies_plaintext() const = 0;
    virtual IoResult read(std::span<std::byte> out) = 0;
    virtual IoResult write(std::span<const std::byte> in) = 0;
    // Sends close_notify: our direction towards the client is finished.
    virtual IoResult shutdown_write() = 0;
    // Client TLS 1.3 KeyUpdates this path turned into new keys of its own (the kernel path; OpenSSL
    // follows them inside SSL_read and does not say).
    virtual uint64_t key_updates_followed() const { return 0; }
};

}  // namespace ztp::crypto
