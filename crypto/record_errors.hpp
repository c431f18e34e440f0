// One table, one meaning: every way a client's record stream can be refused after the handshake,
// with the fatal alert it is owed (RFC 8446 §6.2 / §5), the access log's close reason and the counter
// that counts it. The userspace record layer (RecordReader, PostHandshakeParser) and the kernel
// record path (KernelRecordPath) both name their refusals with a RecordError and take alert, close
// reason and counter from here, so a peer gets the same answer whichever path carries its session.
// The OpenSSL record path is the reference the rows were checked against; where OpenSSL 3.0
// answers differently, the row says so (`openssl_differs`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace ztp::crypto {

inline constexpr uint8_t kAlertWarning = 1;
inline constexpr uint8_t kAlertFatal = 2;
inline constexpr uint8_t kAlertCloseNotify = 0;
inline constexpr uint8_t kAlertUnexpectedMessage = 10;
inline constexpr uint8_t kAlertBadRecordMac = 20;
inline constexpr uint8_t kAlertRecordOverflow = 22;
inline constexpr uint8_t kAlertIllegalParameter = 47;
inline constexpr uint8_t kAlertDecodeError = 50;

enum class RecordError : uint8_t {
    bad_record_mac,                // the AEAD tag did not verify
    record_too_short,              // length below the AEAD's overhead: there is no tag to verify
    ciphertext_overflow,           // TLSCiphertext length over 2^14+256 (TLS 1.2: 2^14+2048)
    plaintext_overflow,            // TLSInnerPlaintext over 2^14+1 / TLS 1.2 plaintext over 2^14
    bad_record_version,            // legacy_record_version is not 0x0303
    unknown_record_type,           // outer (or TLS 1.3 inner) content type TLS does not define here
    ccs_after_handshake,           // change_cipher_spec after the peer's Finished
    zero_inner_type,               // TLS 1.3 TLSInnerPlaintext of zeros only: no content type
    empty_handshake_record,        // zero-length handshake record
    malformed_alert,               // alert record that is not exactly one 2-byte alert (empty too)
    too_many_empty_records,        // more than 32 empty records in a row (a cheap CPU burner)
    handshake_interleaved,         // another record type inside a fragmented handshake message
    key_update_bad_length,         // KeyUpdate body not exactly 1 byte
    key_update_bad_value,          // KeyUpdateRequest neither 0 nor 1
    key_update_not_at_record_end,  // bytes after a KeyUpdate in its record
    unexpected_handshake_message,  // renegotiation, or any post-handshake message a client may not send
    count
};

// Which of the proxy's counters a refusal bumps (ztproxy_bad_records_total,
// ztproxy_malformed_records_total).
enum class RecordCounter : uint8_t { bad_records, malformed_records };

struct RecordErrorInfo {
    RecordError error;
    const char* name;          // stable, for logs and tests
    uint8_t alert;             // fatal alert description sent to the client
    const char* close_reason;  // the access log's close= (proxy/conn/stats.hpp kCloseReasons)
    RecordCounter counter;
    const char* rfc;             // where the alert comes from
    const char* openssl_differs;  // nullptr, or what OpenSSL 3.0's own record layer answers instead
};

// The table, indexed by RecordError (static storage; row i describes RecordError(i)).
std::span<const RecordErrorInfo> record_error_table();
const RecordErrorInfo& describe(RecordError e);
// The counter of a close reason that appears in the table (every row with that reason names the
// same counter); empty for close reasons that are not record errors.
std::optional<RecordCounter> counter_for_close_reason(std::string_view close_reason);

}  // namespace ztp::crypto
