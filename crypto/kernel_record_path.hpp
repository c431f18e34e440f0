// The kernel record path (kTLS): after the handshake the session's traffic keys are installed in
// the socket (TCP_ULP "tls", TLS_RX, TLS_TX) and the kernel encrypts and decrypts every record.
// Application data then moves with plain send/recv/splice; this class handles what the kernel
// hands back to user space: control records (alerts, post-handshake messages) and errors.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <optional>
#include <string>

#include "config/policy.hpp"
#include "crypto/record_path.hpp"
#include "crypto/session_keys.hpp"

namespace ztp::crypto {

// Why a connection whose listener allows kTLS did not get it. Counted per reason.
enum class KtlsFallback : size_t {
    no_kernel_support,   // setsockopt(TCP_ULP, "tls") failed: kernel without CONFIG_TLS / module
    cipher_unsupported,  // negotiated cipher is not one the kernel offloads
    buffered_input,      // OpenSSL already read bytes past the handshake; they cannot be replayed
    key_extraction_failed,
    install_failed,      // the kernel refused the keys
    count
};
const char* to_string(KtlsFallback f);

class KernelRecordPath final : public RecordPath {
public:
    KernelRecordPath(int fd, config::TlsVersion version) : fd_(fd), version_(version) {}

    const char* rx_name() const override { return "kernel"; }
    const char* tx_name() const override { return "kernel"; }
    bool copies_plaintext() const override { return false; }
    // Application data into `out`. Control records are consumed here: close_notify → eof, other
    // alerts → peer_alert, a NewSessionTicket is skipped, a KeyUpdate or renegotiation → error.
    IoResult read(std::span<std::byte> out) override;
    IoResult write(std::span<const std::byte> in) override;
    // close_notify as a kernel-encrypted alert record.
    IoResult shutdown_write() override;
    // A fatal alert (e.g. bad_record_mac after a record failed authentication), best effort:
    // the connection is closed right after.
    void send_fatal_alert(uint8_t description);

    // For the splice relay: splice() failed with EINVAL, i.e. the next record is not
    // application data. Reads and handles that record (with a scratch buffer of our own).
    // ok with bytes > 0 means application data was read after all; it is left in `spill`.
    IoResult read_control(std::string& spill);

private:
    IoResult handle_record(uint8_t type, std::span<const std::byte> body);
    ssize_t send_alert(uint8_t level, uint8_t description);

    int fd_;
    config::TlsVersion version_;
    bool close_notify_sent_ = false;
};

struct KernelMove {
    std::unique_ptr<KernelRecordPath> path;  // set on success
    KtlsFallback reason = KtlsFallback::count;
    bool fatal = false;  // the socket is half-moved: the connection cannot go on on any path
    std::string detail;
};

// Takes the session's traffic keys out of OpenSSL (once; see session_keys.hpp). Fails with a
// fallback reason when the session cannot leave OpenSSL: unsupported cipher, or bytes OpenSSL
// already read past the handshake.
struct TakenKeys {
    std::optional<SessionKeys> keys;
    KtlsFallback reason = KtlsFallback::count;
    std::string detail;
};
TakenKeys take_keys_for_offload(SSL* ssl);

// Installs the keys in the kernel, RX first, then TX (so a failure before TX leaves the socket
// as it was). Call right after the handshake completed and the keys were taken.
KernelMove move_to_kernel(int fd, const SessionKeys& keys);

// The fallback reason for a refused setsockopt(SOL_TLS, TLS_RX/TLS_TX) installing a session's
// first keys, from its errno: cipher_unsupported when the kernel does not offload this version and
// cipher, install_failed otherwise.
KtlsFallback install_failure_reason(int err);

}  // namespace ztp::crypto
