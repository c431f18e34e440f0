#include "crypto/kernel_record_path.hpp"

#include <linux/sockios.h>
#include <linux/tls.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <array>
#include <cstring>

#include "crypto/ktls_sockopt.hpp"
#include "crypto/record_layer.hpp"

namespace ztp::crypto {

namespace {

// A whole TLS record plaintext: the most a control record can carry.
constexpr size_t kMaxRecordPlaintext = 16384 + 256;

const char* alert_name(uint8_t desc) {
    switch (desc) {
        case 0: return "close_notify";
        case 10: return "unexpected_message";
        case 20: return "bad_record_mac";
        case 40: return "handshake_failure";
        case 42: return "bad_certificate";
        case 46: return "certificate_unknown";
        case 47: return "illegal_parameter";
        case 48: return "unknown_ca";
        case 50: return "decode_error";
        case 51: return "decrypt_error";
        case 70: return "protocol_version";
        case 80: return "internal_error";
        case 90: return "user_canceled";
        case 109: return "missing_extension";
        case 112: return "unrecognized_name";
        case 116: return "certificate_required";
        default: return "other";
    }
}

}  // namespace

const char* to_string(KtlsFallback f) {
    switch (f) {
        case KtlsFallback::no_kernel_support: return "no_kernel_support";
        case KtlsFallback::cipher_unsupported: return "cipher_unsupported";
        case KtlsFallback::buffered_input: return "buffered_input";
        case KtlsFallback::key_extraction_failed: return "key_extraction_failed";
        case KtlsFallback::install_failed: return "install_failed";
        case KtlsFallback::max_fragment_length: return "max_fragment_length";
        case KtlsFallback::count: break;
    }
    return "?";
}

IoResult KernelRecordPath::refuse(RecordError e, std::string detail) {
    const auto& row = describe(e);
    fail_with_alert(e);
    const IoStatus status = row.counter == RecordCounter::bad_records ? IoStatus::bad_record : IoStatus::error;
    IoResult r{status, 0, std::move(detail), 0, row.close_reason};
    r.record_error = e;
    return r;
}

IoResult KernelRecordPath::skip_empty_record() {
    if (++empty_run_ > RecordReader::kMaxEmptyRecordsInARow)
        return refuse(RecordError::too_many_empty_records, "more than 32 empty records in a row");
    return {IoStatus::want_read};
}

IoResult KernelRecordPath::handle_record(uint8_t type, std::span<const std::byte> body) {
    auto byte = [&](size_t i) { return static_cast<uint8_t>(body[i]); };
    if (type != kRecordHandshake) {
        // RFC 8446 §5.1: nothing may come between the fragments of a handshake message.
        if (auto e = key_updates_.on_other_record())
            return refuse(*e, "a record inside a fragmented handshake message");
    }
    switch (type) {
        case kRecordAlert:
            // The kernel hands over the record's plaintext whole: it must be exactly one alert.
            if (body.size() != 2) return refuse(RecordError::malformed_alert, "alert record is not one 2-byte alert");
            if (byte(1) == kAlertCloseNotify) return {IoStatus::eof};
            return {IoStatus::peer_alert, 0, std::string("client sent alert ") + alert_name(byte(1))};
        case kRecordHandshake: {
            // Every client handshake record goes through the userspace path's parser: a
            // NewSessionTicket, a renegotiation or a malformed KeyUpdate is refused the same way.
            if (body.empty()) return refuse(RecordError::empty_handshake_record, "empty handshake record");
            auto step = key_updates_.on_client_handshake(
                {reinterpret_cast<const uint8_t*>(body.data()), body.size()});
            if (step.error) return refuse(*step.error, std::move(step.detail));
            if (step.refuse) return {IoStatus::error, 0, std::move(step.detail), 0, step.refuse};
            if (step.next_rx) return install_next_rx(*step.next_rx);
            return {IoStatus::want_read};
        }
        case kRecordChangeCipherSpec:
            // A protected change_cipher_spec (TLS 1.2 encrypts it under the current key; TLS 1.3 as
            // an inner type) arrives as control record 20 (tests/ktls/ktls_record_errors_test.cpp).
            return refuse(RecordError::ccs_after_handshake, "change_cipher_spec after the handshake");
        default:
            return refuse(RecordError::unknown_record_type, "unexpected record type " + std::to_string(type));
    }
}

IoResult KernelRecordPath::install_next_rx(const DirectionKeys& keys) {
    // Tried on every KeyUpdate rather than decided from the kernel version: the kernel says.
    // Linux >= 6.14 takes a second TLS_RX on a TLS 1.3 socket (same version and cipher) as the
    // next key and resumes decryption at the record after the KeyUpdate, sequence 0. Earlier
    // kernels refuse any second TLS_RX with EBUSY: the records after the KeyUpdate are under a key
    // the kernel will never have, so the connection ends here, before any of them is read.
    auto r = ktls_install(fd_, Direction::rx, keys.version, keys.cipher, keys.key.view(), keys.iv.view(), 0);
    if (r) {
        ++rx_rekeys_;
        return {IoStatus::want_read};  // followed: read on under the next key
    }
    const int e = r.error().code;
    if (e == EBUSY)
        return {IoStatus::error, 0, "client sent KeyUpdate; this kernel cannot rekey kTLS RX (EBUSY)", 0,
                "key_update_unsupported"};
    return {IoStatus::error, 0, "KeyUpdate: installing the next RX key: " + r.error().message(), e,
            "internal_error"};
}

IoResult KernelRecordPath::read_one(std::span<std::byte> out, bool& control_handled) {
    control_handled = false;
    // Always recvmsg with a cmsg buffer: a control record read without one gives EIO.
    auto r = ktls_recv(fd_, {reinterpret_cast<uint8_t*>(out.data()), out.size()}, MSG_DONTWAIT);
    if (!r) {
        int e = r.error().code;
        if (e == EAGAIN || e == EWOULDBLOCK) return {IoStatus::want_read};
        // The buffer was scrubbed on EBADMSG (ktls_recv).
        if (auto rec = record_error_from_errno(e)) return refuse(*rec, std::string("recvmsg: ") + std::strerror(e));
        // Linux >= 6.14: decryption is paused behind a KeyUpdate until its key is installed.
        // handle_record installs it in the same call that reads the KeyUpdate, so this means
        // the record was consumed without that: nothing after it can ever be read.
        if (e == EKEYEXPIRED && key_updates_.mid_message()) {
            // The kernel pauses at any handshake record that starts with a KeyUpdate header, also
            // when it holds only the first part of a KeyUpdate fragmented across records (legal,
            // RFC 8446 §5.1). The rest is under the current key: install it again where the
            // kernel stopped, then read on (the next record is parsed and checked as usual).
            if (auto resumed = ktls_resume_rx(fd_); !resumed)
                return {IoStatus::error, 0,
                        "KeyUpdate fragmented across records: resuming kTLS RX: " + resumed.error().message(),
                        resumed.error().code, "internal_error"};
            control_handled = true;
            return {IoStatus::want_read};
        }
        if (e == EKEYEXPIRED)
            return {IoStatus::error, 0, "kTLS RX waits for a KeyUpdate key that was never installed", e,
                    "internal_error"};
        return {IoStatus::error, 0, std::string("recvmsg: ") + std::strerror(e), e};
    }
    if (r->record_type == kRecordApplicationData) {
        if (auto e = key_updates_.on_other_record())
            return refuse(*e, "application data inside a fragmented handshake message");
        if (r->bytes > 0) {
            application_data_arrived();
            return {IoStatus::ok, r->bytes};
        }
        // A zero-length (or padding-only) application_data record also reads as 0 bytes: legal,
        // skipped (RFC 8446 §5.1), never taken as the end of the stream.
        if (classify_zero_read() == ZeroRead::empty_record) {
            auto skipped = skip_empty_record();
            control_handled = skipped.status == IoStatus::want_read;
            return skipped;
        }
        return {IoStatus::eof_unclean};
    }
    auto res = handle_record(r->record_type, out.first(r->bytes));
    control_handled = res.status == IoStatus::want_read;  // skipped or rekeyed
    return res;
}

IoResult KernelRecordPath::read(std::span<std::byte> out) {
    for (;;) {
        bool control_handled = false;
        auto r = read_one(out, control_handled);
        if (!control_handled) return r;
    }
}

IoResult KernelRecordPath::read_control(std::string& spill) {
    static thread_local std::array<std::byte, kMaxRecordPlaintext> scratch;
    // One record only: after the control record the relay splices again, so the application
    // data behind it never passes through user space.
    bool control_handled = false;
    auto r = read_one(scratch, control_handled);
    // Linux >= 6.14 pauses RX at the first part of a KeyUpdate fragmented across records, and a
    // poll for the next record was never answered there (seen on 7.2, tests/hostile conformance):
    // read on now while the message is unfinished, so that read_one() meets the pause
    // (EKEYEXPIRED) and lifts it. Only records of that message (or a record refused for
    // interrupting it) are read here; EAGAIN ends the loop.
    while (control_handled && key_updates_.mid_message()) r = read_one(scratch, control_handled);
    if (r.status == IoStatus::ok) spill.assign(reinterpret_cast<const char*>(scratch.data()), r.bytes);
    return r;
}

IoResult KernelRecordPath::write(std::span<const std::byte> in) {
    if (key_update_owed()) {
        // RFC 8446 §4.6.3: our KeyUpdate goes out before our next application data.
        auto k = send_owed_key_update();
        if (k.status != IoStatus::ok) return k;
    }
    if (tx_broken_) return {IoStatus::error, 0, "kTLS TX has no usable key", 0, "internal_error"};
    ssize_t n = ::send(fd_, in.data(), in.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return {IoStatus::ok, static_cast<size_t>(n)};
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) return {IoStatus::want_write};
    return {IoStatus::error, 0, std::string("send: ") + std::strerror(e), e};
}

IoResult KernelRecordPath::send_owed_key_update() {
    if (tx_broken_) return {IoStatus::error, 0, "kTLS TX has no usable key", 0, "internal_error"};
    if (!pending_tx_) {
        if (!key_updates_.tx_update_owed()) return {IoStatus::ok};
        const auto& msg = KtlsKeyUpdates::kKeyUpdateNotRequested;
        const ssize_t n = send_record(kRecordHandshake, msg);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return {IoStatus::want_write};
        if (n != static_cast<ssize_t>(msg.size())) {
            const int e = n < 0 ? errno : EIO;
            return {IoStatus::error, 0, std::string("sending KeyUpdate: ") + std::strerror(e), e};
        }
        // From here on the client decrypts our records with the next key.
        auto keys = key_updates_.next_tx_keys();
        if (!keys) {
            tx_broken_ = true;
            return {IoStatus::error, 0, "KeyUpdate: " + keys.error().message(), 0, "internal_error"};
        }
        pending_tx_ = std::move(keys).value();
    }
    // Kernel contract (Linux >= 6.14): a second TLS_TX on a TLS 1.3 socket replaces the key after
    // the records already queued (our KeyUpdate among them); newer kernels may answer EAGAIN on a
    // non-blocking socket whose send buffer is full, with the old key still in place: retry.
    const auto& k = *pending_tx_;
    auto r = ktls_install(fd_, Direction::tx, k.version, k.cipher, k.key.view(), k.iv.view(), 0);
    if (!r) {
        const int e = r.error().code;
        if (e == EAGAIN || e == EWOULDBLOCK) return {IoStatus::want_write};
        tx_broken_ = true;
        pending_tx_.reset();
        return {IoStatus::error, 0, "KeyUpdate: installing the next TX key: " + r.error().message(), e,
                e == EBUSY ? "key_update_unsupported" : "internal_error"};
    }
    pending_tx_.reset();
    return {IoStatus::ok};
}

ssize_t KernelRecordPath::send_record(uint8_t type, std::span<const uint8_t> body) {
    return ktls_send_record(fd_, type, body);
}

ssize_t KernelRecordPath::send_alert(uint8_t level, uint8_t description) {
    const uint8_t alert[2] = {level, description};
    return send_record(kRecordAlert, alert);
}

IoResult KernelRecordPath::shutdown_write() {
    // After fail_with_alert our direction is over: the fatal alert and the FIN are out, and nothing
    // may follow a fatal alert (RFC 8446 §6.2).
    if (close_notify_sent_ || failed_) return {IoStatus::ok};
    if (tx_broken_) return {IoStatus::error, 0, "kTLS TX has no usable key", 0, "internal_error"};
    if (send_alert(kAlertWarning, kAlertCloseNotify) == 2) {
        close_notify_sent_ = true;
        return {IoStatus::ok};
    }
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) return {IoStatus::want_write};
    return {IoStatus::error, 0, std::string("sending close_notify: ") + std::strerror(e), e};
}

AlertOutcome KernelRecordPath::fail_with_alert(RecordError e) {
    AlertOutcome out;
    out.alert = describe(e).alert;
    if (failed_) {
        out.send_errno = EALREADY;
        return out;
    }
    failed_ = true;
    // Kernel contract (Linux 6.1, proven in tests/ktls/ktls_record_errors_test.cpp): a record that
    // fails authentication leaves EBADMSG pending in sk_err, and every send on the socket fails
    // with it until it is read; a header kTLS refuses (EMSGSIZE) has already had its sk_err taken
    // by the recvmsg/splice that reported it. Reading SO_ERROR consumes a pending error; kTLS TX
    // is independent of the failed RX context and then seals the alert under the TX key.
    int pending = 0;
    socklen_t len = sizeof pending;
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &pending, &len);
    // Nothing may follow our close_notify (RFC 8446 §6.1), and without a TX key nothing can be sealed.
    if (close_notify_sent_ || tx_broken_) {
        out.send_errno = close_notify_sent_ ? EPIPE : ENOKEY;
    } else if (send_alert(kAlertFatal, out.alert) == 2) {
        out.alert_sent = true;
    } else {
        out.send_errno = errno;
    }
    // Our FIN right behind the alert: the client reads the alert, then an orderly end of stream.
    out.fin_sent = ::shutdown(fd_, SHUT_WR) == 0;
    int unread = 0;
    if (::ioctl(fd_, SIOCINQ, &unread) == 0 && unread > 0) out.unread = static_cast<size_t>(unread);
    return out;
}

KernelRecordPath::ZeroRead KernelRecordPath::classify_zero_read() const {
    // Kernel contract (Linux 6.1, proven in tests/ktls/ktls_record_errors_test.cpp): splice() and
    // read() on a kTLS RX socket return 0 both for a zero-length / padding-only application_data
    // record (consumed) and at the peer's FIN. RCV_SHUTDOWN, which POLLRDHUP reports, is set only
    // by the FIN: without it the 0 was a record.
    pollfd p{fd_, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) < 0 || (p.revents & (POLLRDHUP | POLLHUP)) == 0) return ZeroRead::empty_record;
    // The FIN is in, but records sent before it may still be queued behind the empty one: then
    // TCP still holds their bytes.
    int unread = 0;
    if (::ioctl(fd_, SIOCINQ, &unread) == 0 && unread > 0) return ZeroRead::empty_record;
    return ZeroRead::eof;
}

std::optional<RecordError> record_error_from_errno(int err) {
    // The kTLS RX errors that mean the client sent a bad record (tls_sw.c / tls_strp.c): EBADMSG
    // for a record that fails authentication, is shorter than the AEAD overhead or (TLS 1.3) has no
    // content type; EMSGSIZE for a length over 2^14 plus the AEAD's expansion.
    if (err == EBADMSG) return RecordError::bad_record_mac;
    if (err == EMSGSIZE) return RecordError::plaintext_overflow;
    return std::nullopt;
}

TakenKeys take_keys_for_offload(SSL* ssl) {
    TakenKeys out;
    if (has_buffered_input(ssl)) {
        out.reason = KtlsFallback::buffered_input;
        out.detail = "OpenSSL holds bytes read past the handshake";
        return out;
    }
    auto keys = take_session_keys(ssl);
    if (!keys) {
        out.reason = keys.error().code == ENOTSUP ? KtlsFallback::cipher_unsupported : KtlsFallback::key_extraction_failed;
        out.detail = keys.error().message();
        return out;
    }
    out.keys = std::move(keys).value();
    return out;
}

KtlsFallback install_failure_reason(int err) {
    // Kernel contract for a session's first TLS_RX/TLS_TX (net/tls/tls_main.c
    // do_tls_setsockopt_conf, tls_sw.c tls_set_sw_offload): a version or cipher type this kernel
    // does not know is EINVAL (e.g. CHACHA20-POLY1305 before 5.11), and a known one whose AEAD
    // cannot be instantiated ("gcm(aes)" or "rfc7539(chacha20,poly1305)" not built in and not
    // loadable: crypto_alloc_aead) is ENOENT. EINVAL has other causes (a wrong optlen, a socket in
    // a sockmap) that ztproxy never produces: our crypto_info sizes come from <linux/tls.h>, key
    // sizes are checked before the call (EMSGSIZE), and sockets never enter a sockmap. Anything
    // else (ENOMEM, EBUSY, ENOPROTOOPT) is not about the cipher.
    return err == EINVAL || err == ENOENT ? KtlsFallback::cipher_unsupported : KtlsFallback::install_failed;
}

KernelMove move_to_kernel(int fd, SessionKeys& keys) {
    KernelMove out;
    auto fallback = [&](KtlsFallback why, std::string detail) {
        out.reason = why;
        out.detail = std::move(detail);
        return std::move(out);
    };
    if (auto r = ktls_enable_ulp(fd); !r) {
        if (r.error().code == ENOENT)
            return fallback(KtlsFallback::no_kernel_support, "kernel has no TLS ULP (CONFIG_TLS / tls module)");
        return fallback(KtlsFallback::install_failed, r.error().message());
    }
    if (keys.max_plaintext < kRecordMaxPlaintext) {
        // RFC 6066 max_fragment_length: kTLS TX fills records up to 2^14 unless the kernel can be
        // told a smaller bound. The socket is still whole here (the ULP alone changes nothing on
        // the wire), so a kernel that cannot leaves the session to the userspace path.
        if (auto r = ktls_limit_tx_record(fd, keys.max_plaintext); !r)
            return fallback(KtlsFallback::max_fragment_length,
                            "client negotiated max_fragment_length " + std::to_string(keys.max_plaintext) +
                                "; this kernel cannot bound kTLS TX records (" + r.error().message() + ")");
    }
    // RX first. A kernel that cannot offload this version or cipher says so here, while the
    // socket is still whole (the ULP alone changes nothing on the wire): the userspace path then
    // takes both directions. There is no kernel RX + userspace TX (or the reverse) split, because
    // it could never be chosen: ztproxy needs io_uring SPLICE (Linux >= 5.7), and on every such
    // kernel TLS_TX and TLS_RX accept exactly the same versions and ciphers (one validation and
    // one AEAD setup serve both directions), so a TX refusal after RX succeeded is never about the
    // cipher but something transient such as ENOMEM.
    const auto& rx = keys.rx;
    if (auto r = ktls_install(fd, Direction::rx, rx.version, rx.cipher, rx.key.view(), rx.iv.view(), rx.seq); !r)
        return fallback(install_failure_reason(r.error().code), "TLS_RX: " + r.error().message());
    const auto& tx = keys.tx;
    if (auto r = ktls_install(fd, Direction::tx, tx.version, tx.cipher, tx.key.view(), tx.iv.view(), tx.seq); !r) {
        out.fatal = true;  // RX is already the kernel's: nothing in user space can read this socket
        return fallback(install_failure_reason(r.error().code), "TLS_TX: " + r.error().message());
    }
    KtlsKeyUpdates updates(rx.version, rx.cipher, std::move(keys.rx_secret), std::move(keys.tx_secret));
    out.path = std::make_unique<KernelRecordPath>(fd, std::move(updates));
    return out;
}

}  // namespace ztp::crypto
