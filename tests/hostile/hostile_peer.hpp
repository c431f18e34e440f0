// A hostile TLS client for tests (issues 12 and 13): a real handshake with OpenSSL as the client,
// then OpenSSL is dropped and every record is written and read by this code, on the project's own
// record layer (crypto/record_layer.hpp) with the traffic secrets OpenSSL's keylog callback hands
// over. From there it writes whatever it likes: records of any size (1 byte, exact sizes), paced,
// KeyUpdates at any point, and records no conforming peer sends (bad tags, oversized records, zero
// inner content type, invalid or fragmented KeyUpdates, CCS after the handshake, empty alerts,
// unknown types). It reads and verifies the proxy's records (following its KeyUpdates) and tells
// exactly how the proxy ended the connection: the decrypted alert, and close_notify / FIN / RST.
//
// Key material lives only in SecretBytes (scrubbed, unprintable) and in the record layer's state;
// nothing here logs or prints it.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/policy.hpp"
#include "crypto/record_layer.hpp"
#include "proxy/base/result.hpp"

namespace ztp::hostile {

struct PeerOptions {
    std::string host = "127.0.0.1";
    uint16_t port = 0;
    std::string sni;     // empty: no SNI
    std::string cafile;  // empty: no certificate verification (tests against their own CA pass one)
    config::TlsVersion version = config::TlsVersion::tls1_3;
    std::optional<config::Cipher> cipher;  // empty: OpenSSL's default preference
    int rcvbuf = 0;                        // SO_RCVBUF before connect (0: the kernel default)
    std::chrono::milliseconds timeout{15000};  // every blocking wait on the socket
};

// The records a conforming TLS peer never sends (or, for the *legal* ones, rarely sends), and what
// RFC 8446 says the receiver must do. `expected_alert` 0 with `legal` true: not an error, the
// stream goes on.
enum class Hostile {
    bad_tag,                    // tag flipped                         → bad_record_mac (§5.2)
    bad_ciphertext,             // one ciphertext byte flipped         → bad_record_mac (§5.2)
    oversized_ciphertext,       // TLSCiphertext.length 2^14+256+1     → record_overflow (§5.2)
    oversized_plaintext,        // authentic, inner plaintext 2^14+2   → record_overflow (§5.4)
    empty_appdata,              // zero-length application_data        → legal (§5.1, §5.4)
    padding_only,               // application_data, no content, 32 zero bytes of padding → legal (§5.4)
    zero_inner_type,            // inner plaintext all zeros           → unexpected_message (§5.4)
    empty_alert,                // alert record with no content        → unexpected_message (§5.1, §6)
    unknown_outer_type,         // header type 99                      → unexpected_message (§5)
    unknown_inner_type,         // inner content type 99               → unexpected_message (§5)
    ccs_after_handshake,        // plaintext change_cipher_spec        → unexpected_message (§5)
    key_update_bad_value,       // KeyUpdate request_update = 2        → illegal_parameter (§4.6.3)
    key_update_long,            // KeyUpdate with a 2-byte body        → decode_error (§6.2)
    key_update_empty,           // KeyUpdate with an empty body        → decode_error (§6.2)
    key_update_fragmented,      // KeyUpdate split over 2 records      → legal (§5.1: it ends its record)
    key_update_interleaved,     // KeyUpdate split, app data between   → unexpected_message (§5.1)
    key_update_not_last,        // two KeyUpdates in one record        → unexpected_message (§5.1)
};
struct HostileInfo {
    Hostile kind;
    const char* name;
    uint8_t expected_alert;  // RFC 8446's alert; 0 for a legal record
    bool tls12;              // meaningful on TLS 1.2 too (same expectation)
};
std::span<const HostileInfo> hostile_records();
std::optional<HostileInfo> hostile_by_name(std::string_view name);

// RFC 8446 §6 alert description → its name ("bad_record_mac"), "alert_N" for unknown ones.
std::string alert_name(uint8_t description);

// How the proxy ended the connection, from the client's side.
enum class CloseKind { open, close_notify, fin, rst, timeout, bad_record };
const char* to_string(CloseKind k);

struct ReadResult {
    std::vector<uint8_t> data;             // application data received (kept)
    uint64_t app_bytes = 0;                // application data received during the call, kept or not
    std::optional<crypto::Alert> alert;    // the first alert other than close_notify, decrypted
    CloseKind how = CloseKind::open;       // open: the requested bytes arrived first
    std::string detail;                    // for bad_record: why the proxy's record did not verify
};

class HostilePeer {
public:
    // TCP connect, OpenSSL handshake, keys from the keylog callback; afterwards OpenSSL is never
    // used again on the connection (so it never sends anything on its own, not even an alert).
    static Result<std::unique_ptr<HostilePeer>> connect(const PeerOptions& opt);
    ~HostilePeer();
    HostilePeer(const HostilePeer&) = delete;
    HostilePeer& operator=(const HostilePeer&) = delete;

    config::TlsVersion version() const { return version_; }
    int fd() const { return fd_; }
    uint16_t local_port() const;  // our side of the connection (the access log's client= port)

    // --- writing: each call seals into the pending output; flush() puts it on the wire.
    // `data` as application_data records of at most `record_size` bytes each (1..2^14).
    Result<void> send_app(std::span<const uint8_t> data, size_t record_size = crypto::kRecordMaxPlaintext);
    // One application_data record of `data` (at most 2^14 bytes), sealed but not written.
    Result<void> queue_app(std::span<const uint8_t> data);
    // TLS 1.3 KeyUpdate (RFC 8446 §4.6.3); our own next records use the next key.
    Result<void> send_key_update(bool update_requested);
    Result<void> send_hostile(Hostile kind);
    Result<void> send_close_notify();
    // Writes the sealed records. With a deadline: gives up (ETIMEDOUT) when the socket
    // stays unwritable until then, keeping what was not written; without, uses the options' timeout.
    Result<void> flush(std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt);
    size_t pending_bytes() const { return out_.size() - out_off_; }
    // Records sealed in this direction since the handshake (application data, KeyUpdates, hostile).
    uint64_t records_sent() const { return records_sent_; }
    uint64_t key_updates_sent() const { return key_updates_sent_; }

    // --- reading
    // Reads until `want` bytes of application data arrived or the proxy ended the connection.
    // Follows the proxy's KeyUpdates; NewSessionTickets are skipped.
    ReadResult read_app(size_t want);
    // Reads until the proxy ends the connection or the timeout; application data is kept in data
    // only with `keep`, and always counted in app_bytes.
    ReadResult read_until_close(bool keep = false);
    uint64_t key_updates_received() const { return key_updates_received_; }
    uint64_t update_requests_received() const { return update_requests_received_; }

    // Shuts down the TCP write side (FIN) without close_notify.
    void shutdown_write();

private:
    HostilePeer() = default;
    Result<void> seal(uint8_t outer_type, uint8_t inner_type, std::span<const uint8_t> content, size_t padding = 0,
                      bool flip_tag = false, bool flip_ciphertext = false);
    // The outer type a conforming sender uses: application_data for every protected TLS 1.3
    // record (RFC 8446 §5.2), the real type for TLS 1.2.
    static constexpr uint8_t kHandshake = 22;
    uint8_t outer_for(uint8_t type) const { return version_ == config::TlsVersion::tls1_3 ? 23 : type; }
    Result<void> seal_handshake(std::span<const uint8_t> fragment) { return seal(outer_for(kHandshake), kHandshake, fragment); }
    void raw(std::span<const uint8_t> bytes);
    // Opens the next complete record of in_: application data goes to app_ (or is only counted
    // when `discard`), control records are acted on. False when no complete record is there or the
    // connection ended (r.how set).
    bool take_record(ReadResult& r, bool discard, uint64_t* discarded);
    bool fill(ReadResult& r);  // one recv; false when the connection ended (r.how set)
    void hand_out(ReadResult& r, size_t max);  // up to max bytes of app_ into r.data
    void drain(ReadResult& r, bool keep);       // reads until the connection ends

    int fd_ = -1;
    config::TlsVersion version_ = config::TlsVersion::tls1_3;
    std::optional<crypto::detail::RecordAead> tx_;  // raw sealing: any inner type, any size
    std::optional<crypto::RecordReader> rx_;
    std::optional<crypto::PostHandshakeParser> rx_handshake_;
    std::vector<uint8_t> out_;
    size_t out_off_ = 0;
    std::vector<uint8_t> in_;   // received, not yet opened
    size_t in_off_ = 0;
    std::vector<uint8_t> app_;  // application data opened, not yet handed out
    size_t app_off_ = 0;
    uint64_t records_sent_ = 0;
    uint64_t key_updates_sent_ = 0;
    uint64_t key_updates_received_ = 0;
    uint64_t update_requests_received_ = 0;
    bool owe_key_update_ = false;  // the proxy asked for one: sent before our next application data
    std::chrono::milliseconds timeout_{15000};
};

// The e2e backend's byte pattern (tests/e2e/backend.py pattern_chunks): chunk k of 64 KiB is
// SHAKE-256(b"ztp-bytes" || k as 8 big-endian bytes). Checks a stream of it piece by piece.
class PatternChecker {
public:
    static constexpr size_t kChunk = 64 * 1024;
    // Checks `data` as the next bytes of the stream; false (and first_mismatch set) on a difference.
    bool feed(std::span<const uint8_t> data);
    uint64_t offset() const { return offset_; }
    std::optional<uint64_t> first_mismatch;
    // n bytes of the pattern from `offset` (for tests of the checker itself).
    static std::vector<uint8_t> bytes_at(uint64_t offset, size_t n);

private:
    void load_chunk(uint64_t k);
    uint64_t offset_ = 0;
    uint64_t loaded_ = UINT64_MAX;
    std::vector<uint8_t> chunk_;
};

}  // namespace ztp::hostile
