// ztproxy's own TLS record layer ("software kTLS"): the record protection of TLS 1.2 (RFC 5246 §6.2,
// RFC 5288, RFC 7905) and TLS 1.3 (RFC 8446 §5) for the three AEAD suites, with the key material
// and sequence numbers take_session_keys() hands out — the same inputs kTLS takes. Pure: no sockets,
// no io_uring, no allocation per record (one EVP_CIPHER_CTX per direction, created once, re-keyed on
// KeyUpdate). Decryption and encryption happen IN PLACE.
//
// The gating contract (what the caller's page-gated buffers rely on):
//   * open_in_place() writes only inside the record it was given, and only the ciphertext bytes
//     (turned into plaintext). The header, the TLS 1.2 explicit nonce and the tag are left as they
//     were, and nothing outside the span is ever read or written.
//   * Plaintext is written BEFORE the tag is verified (that is what in place means). The caller
//     releases a record's plaintext only after open_in_place() returned success for it. On a tag
//     failure the whole record span is scrubbed before returning, so no unauthenticated byte
//     survives either.
//
// Error codes (Error::code), so the caller can map them to an alert / close reason:
//   EAGAIN           open_in_place: the span does not hold the complete record yet (not fatal;
//                    nothing was read beyond the span, nothing written). record_size() says how many.
//   EPROTO           malformed header or content: wrong outer type or legacy version, length below
//                    the AEAD minimum, forbidden inner type, all-zero TLS 1.3 plaintext, empty
//                    handshake/alert record, alert not exactly 2 bytes, more than
//                    kMaxEmptyRecordsInARow empty records in a row. Header errors leave the span
//                    untouched (nothing was decrypted; record_size() says which alert is owed);
//                    content errors (found after the tag verified) scrub the record like EBADMSG.
//   EMSGSIZE         length over the limit; span untouched               (alert: record_overflow)
//   EBADMSG          authentication failed; the record span is scrubbed  (alert: bad_record_mac)
//   EOVERFLOW        sequence number exhausted (never wraps)
//   ENOTRECOVERABLE  the object is poisoned by an earlier fatal error (or moved from)
//   EINVAL / ENOTSUP / ENOKEY  API misuse: bad key sizes, too small a buffer, rekey on TLS 1.2 /
//                    without a traffic secret.
// Every error except EAGAIN and pure API misuse (EINVAL from the writer's argument checks, ENOTSUP)
// poisons the object: the connection's record stream has lost integrity or framing, and nothing
// after that point can be parsed or trusted. RecordReader::failure() then names the refusal as a
// RecordError (crypto/record_errors.hpp: the alert the client is owed, the close reason and the
// counter); the caller seals that alert with the RecordWriter and closes.
//
// Control flow the caller owns (see tests/unit/record_layer_test.cpp, KeyUpdateBothDirections):
// handshake records go to a PostHandshakeParser, every other record to its on_other_record(); on a
// KeyUpdate event ask the KeyUpdateLimiter, then RecordReader::rekey() BEFORE opening the next record;
// on update_requested, RecordWriter::seal_key_update(false) before the next application data.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "config/policy.hpp"
#include "crypto/key_schedule.hpp"
#include "crypto/ktls_sockopt.hpp"
#include "crypto/record_errors.hpp"
#include "crypto/secret.hpp"
#include "proxy/base/result.hpp"

namespace ztp::crypto {

enum class ContentType : uint8_t { change_cipher_spec = 20, alert = 21, handshake = 22, application_data = 23 };

inline constexpr size_t kRecordHeaderSize = 5;
inline constexpr size_t kRecordTagSize = 16;
// The largest complete record any of our suites can produce or accept: header + TLS 1.2 explicit
// nonce (8) + 2^14 + tag. (TLS 1.3: header + 2^14 + inner type + tag is one byte less.) A receive
// buffer of this size always holds one whole record.
inline constexpr size_t kRecordMaxSize = kRecordHeaderSize + 8 + kRecordMaxPlaintext + kRecordTagSize;

namespace detail {
struct CipherCtxFree {
    void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

// One direction's AEAD state, shared by RecordReader and RecordWriter (crypto/record_aead.cpp).
class RecordAead {
public:
    static Result<RecordAead> create(DirectionKeys keys, SecretBytes tls13_traffic_secret, bool encrypt);

    bool usable() const { return ctx_ != nullptr && !poisoned_; }
    bool can_rekey() const { return tls13() && !secret_.empty(); }
    void poison() { poisoned_ = true; }
    bool tls13() const { return version_ == config::TlsVersion::tls1_3; }
    // TLS 1.2 AES-GCM: an 8-byte explicit nonce follows the header (RFC 5288 §3).
    bool explicit_nonce() const { return !tls13() && cipher_ != config::Cipher::chacha20_poly1305; }
    config::TlsVersion version() const { return version_; }
    config::Cipher cipher() const { return cipher_; }

    // The nonce for record `seq_`: iv XOR seq (TLS 1.3, TLS 1.2 ChaCha20), or salt || explicit
    // (TLS 1.2 AES-GCM; `explicit8` = the 8 bytes carried in the record).
    std::array<uint8_t, 12> nonce(const uint8_t* explicit8) const;

    // AEAD over `data` in place. seal writes the tag to `tag`; open verifies it (false on mismatch,
    // after which `data` holds unauthenticated bytes the caller must scrub).
    bool seal(const std::array<uint8_t, 12>& nonce, std::span<const uint8_t> aad, std::span<uint8_t> data,
              uint8_t* tag);
    bool open(const std::array<uint8_t, 12>& nonce, std::span<const uint8_t> aad, std::span<uint8_t> data,
              const uint8_t* tag);

    // TLS 1.3 KeyUpdate (RFC 8446 §7.2): next traffic secret, new key and IV, seq 0.
    Result<void> rekey();

    uint64_t seq = 0;
    uint32_t empty_run = 0;  // consecutive empty records opened (RecordReader only)

private:
    RecordAead() = default;
    Result<void> install_key(std::span<const uint8_t> key);

    std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx_;
    SecretBytes iv_;      // 12-byte IV, or the 4-byte salt for TLS 1.2 AES-GCM
    SecretBytes secret_;  // TLS 1.3 application traffic secret (empty: no KeyUpdate possible)
    config::TlsVersion version_ = config::TlsVersion::tls1_3;
    config::Cipher cipher_ = config::Cipher::aes_128_gcm;
    bool encrypt_ = false;
    bool poisoned_ = false;
};
}  // namespace detail

struct OpenedRecord {
    ContentType type;         // the real content type (the inner one for TLS 1.3)
    size_t record_size;       // bytes of `in` this record occupied (header + [nonce] + ciphertext + tag)
    size_t plaintext_offset;  // where the plaintext starts inside `in`
    size_t plaintext_size;    // may be 0 (zero-length application data records are legal)
};

// client → server: what we decrypt. Movable, not copyable; a moved-from reader fails every call.
class RecordReader {
public:
    // `keys` as from take_session_keys() (rx), including the seq of the next record. For TLS 1.3
    // `tls13_traffic_secret` is the matching application traffic secret (needed by rekey(); empty
    // means KeyUpdate cannot be followed and rekey() fails with ENOKEY). Empty for TLS 1.2.
    // EINVAL on a key/IV/secret of the wrong size for the version and cipher.
    static Result<RecordReader> create(DirectionKeys keys, SecretBytes tls13_traffic_secret);

    // Parses the header at in[0..5). Returns the size of the complete record (>= 5; just 5 while
    // fewer than 5 bytes are there), or EPROTO / EMSGSIZE for a header no valid record can have;
    // then `*error` (if given) names it, and `*alert` is the fatal alert the peer is owed for it
    // (describe(error).alert: unexpected_message, decode_error, record_overflow or bad_record_mac).
    Result<size_t> record_size(std::span<const uint8_t> in, uint8_t* alert = nullptr) const;
    Result<size_t> record_size(std::span<const uint8_t> in, RecordError* error) const;

    // Decrypts and verifies the record at the start of `in` in place (see the contract at the top).
    // Bytes of `in` after the record are neither read nor written.
    Result<OpenedRecord> open_in_place(std::span<uint8_t> in);

    // TLS 1.3, after a KeyUpdate record opened: next traffic secret and keys, seq restarts at 0.
    // ENOTSUP on TLS 1.2 (nothing changes); ENOKEY without a traffic secret (poisons: the peer's next
    // records are under a key we cannot have).
    Result<void> rekey();

    // At most this many empty records in a row (OpenSSL's MAX_EMPTY_RECORDS): each costs a full AEAD
    // operation and delivers nothing, so an endless run is a cheap CPU burner. The next one is EPROTO.
    static constexpr uint32_t kMaxEmptyRecordsInARow = 32;

    uint64_t seq() const { return aead_.seq; }  // sequence number of the next record
    bool poisoned() const { return !aead_.usable(); }
    // What the client did wrong, once open_in_place() refused one of its records (empty while the
    // reader is usable, and for failures that are ours: sequence exhaustion, rekey without a secret).
    std::optional<RecordError> failure() const { return failure_; }

private:
    explicit RecordReader(detail::RecordAead a) : aead_(std::move(a)) {}
    Result<size_t> check_header(std::span<const uint8_t> in, RecordError* error) const;
    Error refuse(RecordError e, int code, const char* what);
    detail::RecordAead aead_;
    std::optional<RecordError> failure_;
};

// server → client: what we encrypt. Movable, not copyable.
class RecordWriter {
public:
    static constexpr size_t kMaxPlaintext = kRecordMaxPlaintext;
    // RFC 8446 §5.5: AES-GCM protects at most 2^24.5 full-size records per key. We ask for a KeyUpdate
    // well before (the same threshold for ChaCha20-Poly1305, whose limit is far higher: harmless).
    static constexpr uint64_t kKeyUpdateDueAt = uint64_t{1} << 24;

    // `max_plaintext`: the most plaintext one record may carry towards this client, 2^14 unless the
    // client negotiated a smaller max_fragment_length (RFC 6066 §4: 512, 1024, 2048 or 4096; see
    // negotiated_max_fragment_length in crypto/handshake.hpp). EINVAL for 0 or over 2^14.
    static Result<RecordWriter> create(DirectionKeys keys, SecretBytes tls13_traffic_secret,
                                       size_t max_plaintext = kMaxPlaintext);

    // The plaintext bound of every record this writer seals: callers split their data into slots of
    // at most this many bytes (seal_in_place refuses more with EMSGSIZE).
    size_t max_plaintext() const { return max_plaintext_; }

    size_t headroom() const;  // bytes before the plaintext: 5 (+8 explicit nonce for TLS 1.2 AES-GCM)
    size_t tailroom() const;  // tag (16) (+1 inner content type for TLS 1.3)

    // `buf` = [headroom][plaintext_size bytes of plaintext][tailroom] (buf may be longer; the rest is
    // untouched). Writes the header (and explicit nonce), encrypts in place, appends the tag and
    // returns the record size = headroom() + plaintext_size + tailroom(). Types: application_data
    // (may be empty), handshake (non-empty), alert (exactly 2 bytes). EINVAL for a too small buffer
    // or a bad type/size (the writer stays usable), EMSGSIZE over max_plaintext().
    Result<size_t> seal_in_place(std::span<uint8_t> buf, size_t plaintext_size, ContentType type);

    // Control records into `out` (needs headroom() + 2 / 5 + tailroom() bytes).
    Result<size_t> seal_alert(std::span<uint8_t> out, uint8_t level, uint8_t description);
    // TLS 1.3 only (ENOTSUP on 1.2; ENOKEY, before sealing anything, without a traffic secret): seals
    // KeyUpdate(update_requested) under the current key, then rekeys itself: every record sealed
    // afterwards uses the next key.
    Result<size_t> seal_key_update(std::span<uint8_t> out, bool update_requested);

    Result<void> rekey();
    uint64_t seq() const { return aead_.seq; }
    bool poisoned() const { return !aead_.usable(); }
    // TLS 1.3: time to send seal_key_update(false) (see kKeyUpdateDueAt). Always false for TLS 1.2,
    // which has no rekeying without renegotiation.
    bool key_update_due() const { return aead_.tls13() && aead_.seq >= kKeyUpdateDueAt; }

private:
    RecordWriter(detail::RecordAead a, size_t max_plaintext) : aead_(std::move(a)), max_plaintext_(max_plaintext) {}
    detail::RecordAead aead_;
    size_t max_plaintext_;
};

// ---------------------------------------------------------------------------------------------
// Control record contents.

struct Alert {
    uint8_t level;
    uint8_t description;
};
// An alert record's plaintext (open_in_place already guarantees exactly 2 bytes).
Result<Alert> parse_alert(std::span<const uint8_t> plaintext);

// What one handshake record's plaintext contained, after the handshake.
struct PostHandshakeEvents {
    bool key_update = false;        // a KeyUpdate ended this record: call RecordReader::rekey() before
                                    // opening the next record (and ask KeyUpdateLimiter first)
    bool update_requested = false;  // ...with update_requested: send seal_key_update(false) before our
                                    // next application data (RFC 8446 §4.6.3)
    uint32_t tickets = 0;           // NewSessionTickets completed (only from a server; ignored)
};

// Post-handshake handshake messages, fed record by record. Messages may be coalesced (several per
// record) or split across records: the parser keeps at most the 4-byte message header and the 1-byte
// KeyUpdate body between records, and skips ticket bodies without buffering them.
// Accepted: TLS 1.3 KeyUpdate (body exactly 1 byte, 0 or 1) from either side, and NewSessionTicket
// only when the sender is a server (RFC 8446 §4.6.1: only servers send tickets; we are the server, so
// the default is to refuse them). Everything else — including every TLS 1.2 post-handshake message
// (renegotiation is not supported) — is EPROTO. A KeyUpdate that does not end its record is EPROTO
// (RFC 8446 §5.1: handshake messages must not span a key change). Any error poisons the parser,
// and failure() names it (crypto/record_errors.hpp). The userspace and the kernel record paths both
// parse the client's post-handshake records with this one parser.
class PostHandshakeParser {
public:
    enum class Sender { client, server };
    explicit PostHandshakeParser(config::TlsVersion version, Sender sender = Sender::client)
        : version_(version), sender_(sender) {}

    Result<PostHandshakeEvents> feed(std::span<const uint8_t> handshake_record_plaintext);
    // Call for every record that is NOT a handshake record: EPROTO while a handshake message is
    // unfinished (RFC 8446 §5.1 forbids interleaving other record types into a handshake message).
    Result<void> on_other_record();
    bool mid_message() const { return hdr_len_ != 0; }
    std::optional<RecordError> failure() const { return failure_; }

private:
    Error fail(RecordError e, const char* why);

    config::TlsVersion version_;
    Sender sender_;
    std::optional<RecordError> failure_;
    std::array<uint8_t, 4> hdr_{};
    size_t hdr_len_ = 0;      // bytes of the current message header seen (0 = between messages)
    uint32_t body_len_ = 0;   // of the current message
    uint32_t body_seen_ = 0;
};

// KeyUpdate flood protection. Each KeyUpdate costs us an HKDF and, with update_requested, a record of
// our own; a peer could send them back to back. The caller asks allow() for every KeyUpdate it
// receives and closes the connection when it says no. Limits (both must hold):
//   * at most `per_second` KeyUpdates in any sliding one-second window (default 8, clamped to 1..32);
//   * at least `min_records` records under each key before the next KeyUpdate (default 64): pass
//     `records_under_current_key` = RecordReader::seq() right after opening the KeyUpdate record
//     (it counts that record). The first KeyUpdate of a connection is exempt from this rule, so a
//     client may update right after the handshake.
class KeyUpdateLimiter {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr unsigned kMaxPerSecond = 32;
    struct Limits {
        unsigned per_second = 8;
        uint64_t min_records = 64;
    };
    KeyUpdateLimiter() : KeyUpdateLimiter(Limits{}) {}
    explicit KeyUpdateLimiter(Limits limits);

    bool allow(uint64_t records_under_current_key, Clock::time_point now = Clock::now());
    uint64_t accepted() const { return accepted_; }

private:
    Limits limits_;
    std::array<Clock::time_point, kMaxPerSecond> times_{};  // ring of the last per_second accepts
    size_t next_ = 0;
    uint64_t accepted_ = 0;
};

}  // namespace ztp::crypto
