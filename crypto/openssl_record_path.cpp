#include "crypto/openssl_record_path.hpp"

#include <openssl/err.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "crypto/handshake.hpp"

namespace ztp::crypto {

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
            // Refused client records (OpenSSL has sent its alert): counted and named as on our
            // own record path. The record layer's reason is the last error raised (a failed AEAD
            // may queue the provider's error before it).
            const unsigned long last = ERR_peek_last_error();
            switch (ERR_GET_LIB(last) == ERR_LIB_SSL ? ERR_GET_REASON(last) : 0) {
                case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
                    return {IoStatus::bad_record, 0, std::string(op) + ": " + take_openssl_error()};
                case SSL_R_WRONG_VERSION_NUMBER:
                case SSL_R_BAD_RECORD_TYPE:
                    return {IoStatus::malformed_record, 0, std::string(op) + ": " + take_openssl_error(), 0,
                            "malformed_record"};
                case SSL_R_PACKET_LENGTH_TOO_LONG:
                case SSL_R_ENCRYPTED_LENGTH_TOO_LONG:
                    return {IoStatus::malformed_record, 0, std::string(op) + ": " + take_openssl_error(), 0,
                            "record_overflow"};
                default: return {IoStatus::error, 0, std::string(op) + ": " + take_openssl_error()};
            }
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
