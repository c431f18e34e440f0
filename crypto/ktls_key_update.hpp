// KtlsKeyUpdates: following TLS 1.3 KeyUpdates on a kTLS socket, minus the socket. It keeps the
// connection's current application traffic secrets (SecretBytes, scrubbed) after the session moved
// into the kernel, rate-limits the client's KeyUpdates (the userspace path's KeyUpdateLimiter and
// limits), parses the client's post-handshake handshake records, and derives the next keys in the
// layout ktls_install() takes. The kernel record path does the setsockopt()s; keeping this part free
// of sockets lets the host's unit tests check it against OpenSSL.
//
// The kernel contract it serves (Linux >= 6.14, Documentation/networking/tls.rst "TLS 1.3 Key
// Updates"): when kTLS RX decrypts a KeyUpdate it pauses decryption, every read after that record
// fails with EKEYEXPIRED until user space installs the next key with setsockopt(TLS_RX) (same
// version and cipher, record sequence 0); our own KeyUpdate goes out as a handshake record through
// sendmsg + TLS_SET_RECORD_TYPE under the old TX key, then setsockopt(TLS_TX) installs the next
// one. Earlier kernels refuse a second TLS_RX/TLS_TX with EBUSY.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "config/policy.hpp"
#include "crypto/key_schedule.hpp"
#include "crypto/record_layer.hpp"
#include "crypto/secret.hpp"

namespace ztp::crypto {

class KtlsKeyUpdates {
public:
    using Clock = KeyUpdateLimiter::Clock;
    // The userspace path's limits: at most 8 KeyUpdates in any second; a client may rekey twice in
    // a row (no minimum number of records between updates).
    static constexpr KeyUpdateLimiter::Limits kLimits{8, 0};
    // Our own KeyUpdate: handshake type key_update(24), uint24 length 1, update_not_requested(0)
    // (RFC 8446 §4.6.3: the answer to update_requested never asks back).
    static constexpr std::array<uint8_t, 5> kKeyUpdateNotRequested{24, 0, 0, 1, 0};

    // `rx_secret`/`tx_secret`: the TLS 1.3 application traffic secrets take_session_keys() handed
    // out (this object becomes their only keeper). Empty for TLS 1.2, which has no KeyUpdate.
    KtlsKeyUpdates(config::TlsVersion version, config::Cipher cipher, SecretBytes rx_secret, SecretBytes tx_secret);

    // What one client handshake record (its plaintext, from recvmsg on the kTLS RX socket) asks for.
    struct Outcome {
        // Set when the record cannot be followed: the access log's close reason and why.
        const char* refuse = nullptr;
        std::string detail;
        // Set when the client broke the protocol: the row of crypto/record_errors.hpp (alert, close
        // reason = `refuse`, counter). Empty for refusals that are not the client's fault.
        std::optional<RecordError> error;
        // A KeyUpdate: the keys for the client's records after it (sequence 0).
        std::optional<DirectionKeys> next_rx;
    };
    // Every client handshake record goes through the userspace path's PostHandshakeParser.
    // Refusals: the parser's (`error` set: renegotiation and messages a client may not send, a
    // malformed KeyUpdate; see crypto/record_errors.hpp), key_update_flood (over the rate limit),
    // internal_error (no traffic secret, or the derivation failed). A message split across records
    // is no refusal: mid_message() says the next record must be read (not spliced) and handed to
    // on_other_record() unless it is a handshake record.
    Outcome on_client_handshake(std::span<const uint8_t> plaintext, Clock::time_point now = Clock::now());
    // A client record that is not a handshake record: RecordError::handshake_interleaved while a
    // handshake message is unfinished (RFC 8446 §5.1), else nothing.
    std::optional<RecordError> on_other_record();
    bool mid_message() const { return parser_.mid_message(); }

    // The client asked for our KeyUpdate (update_requested) and it has not gone out yet. Several
    // requests while we were silent are answered by one KeyUpdate (RFC 8446 §4.6.3).
    bool tx_update_owed() const { return tx_owed_; }
    // The next TX keys (sequence 0), for after our KeyUpdate record left under the current key.
    // Advances the TX secret and clears the debt.
    Result<DirectionKeys> next_tx_keys();

    uint64_t rx_updates() const { return rx_updates_; }  // next RX keys handed out (installed or not)
    uint64_t tx_updates() const { return tx_updates_; }  // TX keys handed out by next_tx_keys()

private:
    Result<DirectionKeys> advance(SecretBytes& secret);

    config::Cipher cipher_;
    SecretBytes rx_secret_;
    SecretBytes tx_secret_;
    PostHandshakeParser parser_;
    KeyUpdateLimiter limiter_{kLimits};
    bool tx_owed_ = false;
    uint64_t rx_updates_ = 0;
    uint64_t tx_updates_ = 0;
};

}  // namespace ztp::crypto
