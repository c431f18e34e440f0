#include "crypto/ktls_key_update.hpp"

#include <utility>

namespace ztp::crypto {

KtlsKeyUpdates::KtlsKeyUpdates(config::TlsVersion version, config::Cipher cipher, SecretBytes rx_secret,
                               SecretBytes tx_secret)
    : cipher_(cipher),
      rx_secret_(std::move(rx_secret)),
      tx_secret_(std::move(tx_secret)),
      parser_(version, PostHandshakeParser::Sender::client) {}

Result<DirectionKeys> KtlsKeyUpdates::advance(SecretBytes& secret) {
    if (secret.empty()) return make_error(ENOKEY, "KeyUpdate: no traffic secret kept for this connection");
    auto next = tls13_next_traffic_secret(cipher_, secret.view());
    if (!next) return next.error();
    auto keys = tls13_traffic_keys(cipher_, next->view());
    if (!keys) return keys.error();
    // The old secret is scrubbed by the move: only the current generation is ever kept.
    secret = std::move(next).value();
    return keys;
}

KtlsKeyUpdates::Outcome KtlsKeyUpdates::on_client_handshake(std::span<const uint8_t> plaintext,
                                                            Clock::time_point now) {
    Outcome out;
    auto events = parser_.feed(plaintext);
    if (!events) {
        out.error = parser_.failure().value_or(RecordError::unexpected_handshake_message);
        out.refuse = describe(*out.error).close_reason;
        out.detail = std::string("post-handshake message refused: ") + events.error().what;
        return out;
    }
    if (!events->key_update) return out;
    // A peer can send KeyUpdates back to back; each costs us a key derivation and two setsockopts.
    if (!limiter_.allow(0, now)) {
        out.refuse = "key_update_flood";
        out.detail = "client exceeded the KeyUpdate rate limit";
        return out;
    }
    auto keys = advance(rx_secret_);
    if (!keys) {
        out.refuse = "internal_error";
        out.detail = "KeyUpdate: " + keys.error().message();
        return out;
    }
    ++rx_updates_;
    if (events->update_requested) tx_owed_ = true;
    out.next_rx = std::move(keys).value();
    return out;
}

std::optional<RecordError> KtlsKeyUpdates::on_other_record() {
    if (parser_.on_other_record()) return std::nullopt;
    return parser_.failure().value_or(RecordError::handshake_interleaved);
}

Result<DirectionKeys> KtlsKeyUpdates::next_tx_keys() {
    auto keys = advance(tx_secret_);
    if (!keys) return keys.error();
    tx_owed_ = false;
    ++tx_updates_;
    return keys;
}

}  // namespace ztp::crypto
