// The kernel record path (kTLS): after the handshake the session's traffic keys are installed in
// the socket (TCP_ULP "tls", TLS_RX, TLS_TX) and the kernel encrypts and decrypts every record.
// Application data then moves with plain send/recv/splice; this class handles what the kernel
// hands back to user space: control records (alerts, post-handshake messages) and errors.
#pragma once

#include <openssl/ssl.h>
#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "config/policy.hpp"
#include "crypto/ktls_key_update.hpp"
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
    max_fragment_length,  // the client negotiated max_fragment_length (RFC 6066) and the kernel cannot
                          // bound kTLS TX records (TLS_TX_MAX_PAYLOAD_LEN, newer than Linux 6.1)
    count
};
const char* to_string(KtlsFallback f);

// What KernelRecordPath::fail_with_alert did on the socket.
struct AlertOutcome {
    uint8_t alert = 0;        // the alert description owed (crypto/record_errors.hpp)
    bool alert_sent = false;  // the fatal alert went out as a kTLS TX record
    int send_errno = 0;       // why not (EALREADY: this path already failed once)
    bool fin_sent = false;    // shutdown(SHUT_WR): our FIN follows the alert
    // Bytes the kernel still holds in the receive queue (the refused record, and what followed it):
    // kTLS can never hand them out, and a close() with unread bytes makes Linux send a RST after
    // our FIN (tcp_close). The client has the alert and the FIN before it.
    size_t unread = 0;
};

// Maps a kTLS RX errno (recvmsg, or splice in the relay) to the record error it reports, or empty
// when the errno is not about a client record.
std::optional<RecordError> record_error_from_errno(int err);

class KernelRecordPath final : public RecordPath {
public:
    // `key_updates` keeps the TLS 1.3 traffic secrets for KeyUpdate (empty secrets for TLS 1.2).
    KernelRecordPath(int fd, KtlsKeyUpdates key_updates) : fd_(fd), key_updates_(std::move(key_updates)) {}

    const char* rx_name() const override { return "kernel"; }
    const char* tx_name() const override { return "kernel"; }
    bool copies_plaintext() const override { return false; }
    // Application data into `out`. Control records are consumed here: close_notify → eof, other
    // alerts → peer_alert, a TLS 1.3 KeyUpdate installs the next RX key and reading goes on (or the
    // connection closes: key_update_unsupported where the kernel cannot rekey, key_update_flood
    // over the rate limit), empty application_data records are skipped. Every protocol violation
    // (crypto/record_errors.hpp: bad tag, oversized record, malformed alert, renegotiation, bad or
    // interleaved KeyUpdate, change_cipher_spec, unknown type) → bad_record or error with
    // `record_error` and the row's close reason, after fail_with_alert() sent the row's alert.
    IoResult read(std::span<std::byte> out) override;
    // Sends an owed KeyUpdate first (send_owed_key_update), then the application data.
    IoResult write(std::span<const std::byte> in) override;
    // close_notify as a kernel-encrypted alert record.
    IoResult shutdown_write() override;
    uint64_t key_updates_followed() const override { return rx_rekeys_; }
    // Ends the connection's TLS for a client protocol violation: the row's fatal alert through
    // kTLS TX (also after EBADMSG / EMSGSIZE on RX: a pending socket error is consumed first), then
    // shutdown(SHUT_WR) so our FIN follows it. Once per path; the relay closes the socket after it
    // (the splice relay calls it for EBADMSG / EMSGSIZE from splice: see record_error_from_errno).
    AlertOutcome fail_with_alert(RecordError e);

    // After splice()/read() returned 0 on the kTLS RX socket: was it a zero-length (or
    // padding-only) application_data record, which the kernel consumed and which must be skipped,
    // or the client's FIN? Non-blocking; call right after the 0.
    enum class ZeroRead { empty_record, eof };
    ZeroRead classify_zero_read() const;

    // An empty application_data record was skipped (by read(), or a splice that returned 0 for
    // one): more than RecordReader::kMaxEmptyRecordsInARow in a row is refused with the table's
    // too_many_empty_records row, as the userspace path and OpenSSL refuse it (each costs a
    // syscall or two and carries nothing). want_read while under the cap.
    IoResult skip_empty_record();
    // Application data arrived (read or spliced): a run of empty records is over.
    void application_data_arrived() { empty_run_ = 0; }

    // A client handshake message is split across records and unfinished: the next client record
    // must be read with read_control() (not spliced), so that application data in between is
    // refused (RFC 8446 §5.1).
    bool control_pending() const { return key_updates_.mid_message(); }

    // For the splice relay: splice() failed with EINVAL (the next record is not application data)
    // or EKEYEXPIRED (the kernel waits for a KeyUpdate's key). Reads and handles that one record
    // (with a scratch buffer of our own): want_read when it was skipped or followed and splicing
    // can resume. ok with bytes > 0 means application data was read after all; it is left in
    // `spill`.
    IoResult read_control(std::string& spill);

    // The client asked for our KeyUpdate (update_requested) and it is not fully out yet.
    bool key_update_owed() const { return key_updates_.tx_update_owed() || pending_tx_.has_value(); }
    // Our KeyUpdate record under the current TX key, then the next TX key. Only while no other
    // write to the socket is in flight (a splice encrypting between the two would use the old key
    // after our KeyUpdate). ok when done or nothing was owed; want_write: call again when writable.
    IoResult send_owed_key_update();

private:
    // One recvmsg; `control_handled` when it was a control record that was dealt with (skipped,
    // or a KeyUpdate followed) and reading can go on.
    IoResult read_one(std::span<std::byte> out, bool& control_handled);
    IoResult handle_record(uint8_t type, std::span<const std::byte> body);
    IoResult refuse(RecordError e, std::string detail);
    IoResult install_next_rx(const DirectionKeys& keys);
    ssize_t send_record(uint8_t type, std::span<const uint8_t> body);
    ssize_t send_alert(uint8_t level, uint8_t description);

    int fd_;
    KtlsKeyUpdates key_updates_;
    // Next TX keys derived after our KeyUpdate left, until the kernel took them.
    std::optional<DirectionKeys> pending_tx_;
    // Our KeyUpdate left but the next TX key could not be installed: the client reads everything
    // after it with the next key, so nothing more may be sent.
    bool tx_broken_ = false;
    bool close_notify_sent_ = false;
    bool failed_ = false;  // fail_with_alert ran
    uint64_t rx_rekeys_ = 0;  // next RX keys the kernel took
    uint32_t empty_run_ = 0;  // empty application_data records in a row
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
// as it was). Call right after the handshake completed and the keys were taken. On success the
// TLS 1.3 traffic secrets move out of `keys` into the path (for KeyUpdate); on a failure `keys` is
// left whole for the userspace path.
KernelMove move_to_kernel(int fd, SessionKeys& keys);

// The fallback reason for a refused setsockopt(SOL_TLS, TLS_RX/TLS_TX) installing a session's
// first keys, from its errno: cipher_unsupported when the kernel does not offload this version and
// cipher, install_failed otherwise.
KtlsFallback install_failure_reason(int err);

}  // namespace ztp::crypto
