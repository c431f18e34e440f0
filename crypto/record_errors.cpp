#include "crypto/record_errors.hpp"

#include <array>

namespace ztp::crypto {

namespace {

using E = RecordError;
using C = RecordCounter;

// Row order = enum order (checked below at compile time). Close reasons: `bad_record` for what
// failed authentication, `record_overflow` for lengths, `bad_key_update` for KeyUpdates we cannot
// follow, `renegotiation_refused` for messages we never accept, `malformed_record` for the rest.
constexpr std::array<RecordErrorInfo, static_cast<size_t>(E::count)> kTable{{
    {E::bad_record_mac, "bad_record_mac", kAlertBadRecordMac, "bad_record", C::bad_records,
     "RFC 8446 §5.2: a record that fails deprotection is answered with bad_record_mac (RFC 5246 §7.2.2)",
     nullptr},
    {E::record_too_short, "record_too_short", kAlertBadRecordMac, "bad_record", C::bad_records,
     "RFC 8446 §5.2: no tag to verify, so deprotection fails: bad_record_mac", nullptr},
    {E::ciphertext_overflow, "ciphertext_overflow", kAlertRecordOverflow, "record_overflow", C::malformed_records,
     "RFC 8446 §5.2: TLSCiphertext.length over 2^14 + 256 is record_overflow (RFC 5246 §6.2.3: 2^14 + 2048)",
     nullptr},
    {E::plaintext_overflow, "plaintext_overflow", kAlertRecordOverflow, "record_overflow", C::malformed_records,
     "RFC 8446 §5.4: a TLSInnerPlaintext over 2^14 + 1 octets is record_overflow (RFC 5246 §6.2.1: 2^14)",
     nullptr},
    {E::bad_record_version, "bad_record_version", kAlertDecodeError, "malformed_record", C::malformed_records,
     "RFC 8446 §5.1: legacy_record_version is 0x0303 after the ClientHello; a field out of range is "
     "decode_error (§6.2)",
     "TLS 1.2: protocol_version (SSL_R_WRONG_VERSION_NUMBER)"},
    {E::unknown_record_type, "unknown_record_type", kAlertUnexpectedMessage, "malformed_record",
     C::malformed_records, "RFC 8446 §5: a record with an unexpected type is unexpected_message",
     "TLS 1.2: OpenSSL checks the tag first (the type is in the AAD) and answers bad_record_mac"},
    {E::ccs_after_handshake, "ccs_after_handshake", kAlertUnexpectedMessage, "malformed_record",
     C::malformed_records,
     "RFC 8446 §5: a change_cipher_spec after the peer's Finished is an unexpected record type: "
     "unexpected_message",
     nullptr},
    {E::zero_inner_type, "zero_inner_type", kAlertUnexpectedMessage, "malformed_record", C::malformed_records,
     "RFC 8446 §5.4: a plaintext without a non-zero octet MUST be answered with unexpected_message", nullptr},
    {E::empty_handshake_record, "empty_handshake_record", kAlertUnexpectedMessage, "malformed_record",
     C::malformed_records,
     "RFC 8446 §5.1: zero-length fragments of Handshake types MUST NOT be sent; unexpected_message as "
     "OpenSSL (SSL_R_BAD_LENGTH)",
     nullptr},
    {E::malformed_alert, "malformed_alert", kAlertDecodeError, "malformed_record", C::malformed_records,
     "RFC 8446 §5.1: an alert record holds exactly one alert; a message of the wrong length is "
     "decode_error (§6.2)",
     "unexpected_message (SSL_R_INVALID_ALERT; empty TLS 1.3 alert: SSL_R_BAD_LENGTH)"},
    {E::too_many_empty_records, "too_many_empty_records", kAlertUnexpectedMessage, "malformed_record",
     C::malformed_records,
     "RFC 8446 §5.1 allows empty application_data; a run over 32 is refused like OpenSSL's "
     "MAX_EMPTY_RECORDS (unexpected_message)",
     nullptr},
    {E::handshake_interleaved, "handshake_interleaved", kAlertUnexpectedMessage, "malformed_record",
     C::malformed_records,
     "RFC 8446 §5.1: handshake messages MUST NOT be interleaved with other record types: "
     "unexpected_message",
     nullptr},
    {E::key_update_bad_length, "key_update_bad_length", kAlertDecodeError, "bad_key_update",
     C::malformed_records, "RFC 8446 §4.6.3 / §6.2: a KeyUpdate whose length is not 1 is decode_error",
     nullptr},
    {E::key_update_bad_value, "key_update_bad_value", kAlertIllegalParameter, "bad_key_update",
     C::malformed_records,
     "RFC 8446 §4.6.3: a request_update other than 0 or 1 MUST be answered with illegal_parameter", nullptr},
    {E::key_update_not_at_record_end, "key_update_not_at_record_end", kAlertUnexpectedMessage,
     "bad_key_update", C::malformed_records,
     "RFC 8446 §5.1: a message before a key change must end its record, else unexpected_message", nullptr},
    {E::unexpected_handshake_message, "unexpected_handshake_message", kAlertUnexpectedMessage,
     "renegotiation_refused", C::malformed_records,
     "RFC 8446 §4.6 / §6.2: a post-handshake message a client may not send is unexpected_message; TLS 1.2 "
     "renegotiation is refused (RFC 5746 §4.4 leaves the answer to the server)",
     "TLS 1.2 ClientHello: a no_renegotiation warning, and the connection goes on"},
}};

constexpr bool table_in_enum_order() {
    for (size_t i = 0; i < kTable.size(); ++i)
        if (static_cast<size_t>(kTable[i].error) != i) return false;
    return true;
}
static_assert(table_in_enum_order(), "record error table rows must follow the RecordError order");

// One close reason, one counter: counter_for_close_reason relies on it.
constexpr bool one_counter_per_close_reason() {
    for (const auto& a : kTable)
        for (const auto& b : kTable)
            if (std::string_view(a.close_reason) == b.close_reason && a.counter != b.counter) return false;
    return true;
}
static_assert(one_counter_per_close_reason(), "rows sharing a close reason must share the counter");

}  // namespace

std::span<const RecordErrorInfo> record_error_table() { return kTable; }

const RecordErrorInfo& describe(RecordError e) {
    const auto i = static_cast<size_t>(e);
    return kTable[i < kTable.size() ? i : 0];
}

std::optional<RecordCounter> counter_for_close_reason(std::string_view close_reason) {
    for (const auto& row : kTable)
        if (close_reason == row.close_reason) return row.counter;
    return std::nullopt;
}

}  // namespace ztp::crypto
