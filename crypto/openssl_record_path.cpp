#include "crypto/openssl_record_path.hpp"

#include <openssl/err.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>

#include "crypto/handshake.hpp"
#include "crypto/record_errors.hpp"

namespace ztp::crypto {

namespace {

// OpenSSL 3.0's reason for a client record it refused after the handshake → our table's row.
// Reasons that are not about the client's records (internal errors, I/O) map to nothing.
std::optional<RecordError> refused_record(int reason) {
    switch (reason) {
        case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC: return RecordError::bad_record_mac;
        case SSL_R_PACKET_LENGTH_TOO_LONG:
        case SSL_R_ENCRYPTED_LENGTH_TOO_LONG: return RecordError::ciphertext_overflow;
        case SSL_R_DATA_LENGTH_TOO_LONG: return RecordError::plaintext_overflow;
        case SSL_R_WRONG_VERSION_NUMBER: return RecordError::bad_record_version;
        case SSL_R_BAD_RECORD_TYPE:
        case SSL_R_UNEXPECTED_RECORD: return RecordError::unknown_record_type;
        case SSL_R_UNEXPECTED_CCS_MESSAGE:
        case SSL_R_CCS_RECEIVED_EARLY: return RecordError::ccs_after_handshake;
        case SSL_R_BAD_LENGTH:  // after the handshake: an alert record that is not one 2-byte alert
        case SSL_R_INVALID_ALERT: return RecordError::malformed_alert;
        // OpenSSL 3.0's TLS record layer raises it only past MAX_EMPTY_RECORDS (32) empty records in
        // a row (with unexpected_message); a record too short for its tag is a decryption failure.
        case SSL_R_RECORD_TOO_SMALL: return RecordError::too_many_empty_records;
        case SSL_R_MIXED_HANDSHAKE_AND_NON_HANDSHAKE_DATA: return RecordError::handshake_interleaved;
        case SSL_R_NOT_ON_RECORD_BOUNDARY: return RecordError::key_update_not_at_record_end;
        case SSL_R_BAD_KEY_UPDATE: return RecordError::key_update_bad_value;  // value or empty body
        case SSL_R_EXCESSIVE_MESSAGE_SIZE: return RecordError::key_update_bad_length;  // the only message a client sends
        case SSL_R_UNEXPECTED_MESSAGE: return RecordError::unexpected_handshake_message;
        default: return std::nullopt;
    }
}

}  // namespace

IoResult OpenSslRecordPath::classify(int rc, const char* op) {
    int err = SSL_get_error(ssl_, rc);
    switch (err) {
        case SSL_ERROR_WANT_READ: return {IoStatus::want_read};
        case SSL_ERROR_WANT_WRITE: return {IoStatus::want_write};
        case SSL_ERROR_ZERO_RETURN: return {IoStatus::eof};
        case SSL_ERROR_SYSCALL: {
            int e = errno;
            std::string why = take_openssl_error();
            if (why.empty() && e == 0) return {IoStatus::eof_unclean};
            if (why.empty()) why = std::strerror(e);
            return {IoStatus::error, 0, std::string(op) + ": " + why, e};
        }
        case SSL_ERROR_SSL: {
            unsigned long e = ERR_peek_error();
            // OpenSSL 3 reports a TCP FIN without close_notify as an SSL error.
            if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
                ERR_clear_error();
                return {IoStatus::eof_unclean};
            }
            // Refused client records (OpenSSL has sent its alert): named by the same table row as on
            // the userspace and kernel paths, so the close reason and the counter do not depend on
            // the record path. The record layer's reason is the last error raised (a failed AEAD
            // may queue the provider's error before it).
            const unsigned long last = ERR_peek_last_error();
            const auto row = refused_record(ERR_GET_LIB(last) == ERR_LIB_SSL ? ERR_GET_REASON(last) : 0);
            if (!row) return {IoStatus::error, 0, std::string(op) + ": " + take_openssl_error()};
            const RecordErrorInfo& info = describe(*row);
            IoResult r{*row == RecordError::bad_record_mac ? IoStatus::bad_record : IoStatus::malformed_record, 0,
                       std::string(op) + ": " + take_openssl_error(), 0, info.close_reason};
            r.record_error = *row;
            return r;
        }
        default: return {IoStatus::error, 0, std::string(op) + ": " + take_openssl_error()};
    }
}

IoResult OpenSslRecordPath::read(std::span<std::byte> out) {
    ERR_clear_error();
    errno = 0;
    size_t n = 0;
    int rc = SSL_read_ex(ssl_, out.data(), out.size(), &n);
    if (rc == 1) return {IoStatus::ok, n};
    return classify(rc, "SSL_read");
}

IoResult OpenSslRecordPath::write(std::span<const std::byte> in) {
    ERR_clear_error();
    errno = 0;
    size_t n = 0;
    int rc = SSL_write_ex(ssl_, in.data(), in.size(), &n);
    if (rc == 1) return {IoStatus::ok, n};
    return classify(rc, "SSL_write");
}

IoResult OpenSslRecordPath::shutdown_write() {
    ERR_clear_error();
    errno = 0;
    int rc = SSL_shutdown(ssl_);
    // 0: our close_notify is out, the peer's not yet seen (we keep reading); 1: both done.
    if (rc >= 0) return {IoStatus::ok};
    return classify(rc, "SSL_shutdown");
}

}  // namespace ztp::crypto
