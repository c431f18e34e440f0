// Session ticket keys: what encrypts the TLS 1.2 and TLS 1.3 session tickets the server hands out,
// held outside any SSL_CTX so that they survive reloads (new contexts, same keys), can be shared
// by a fleet (one key file, many instances) and rotated.
//
// A key is 80 bytes: a 16-byte name (sent in the clear at the start of every ticket, so the
// server knows which key made it), a 32-byte HMAC-SHA256 key and a 32-byte AES-256-CBC key
// (OpenSSL's own ticket format). Of a key list, the first encrypts new tickets; every key
// decrypts, and a ticket made by any but the first is accepted and replaced by a fresh one.
//
// Two sources:
//   * a key file ([listener.tls] session_ticket_keys, crypto/ticket_key_file.hpp): fixed here,
//     rotated by the operator (prepend a key, reload);
//   * generated: TicketKeyStore::process(), created once per process, rotated on a schedule.
//
// Keys are SecretBytes (scrubbed, never printable). A key dropped by rotation or a reload is
// scrubbed once the last handshake using it lets go of it.
#pragma once

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "crypto/secret.hpp"
#include "proxy/base/result.hpp"

namespace ztp::crypto {

inline constexpr size_t kTicketKeyNameBytes = 16;
inline constexpr size_t kTicketHmacKeyBytes = 32;
inline constexpr size_t kTicketAesKeyBytes = 32;
inline constexpr size_t kTicketKeyBytes = kTicketKeyNameBytes + kTicketHmacKeyBytes + kTicketAesKeyBytes;

struct TicketKey {
    std::array<uint8_t, kTicketKeyNameBytes> name{};  // not secret: every ticket starts with it
    SecretBytes hmac;                                 // kTicketHmacKeyBytes
    SecretBytes aes;                                  // kTicketAesKeyBytes

    // name | HMAC key | AES key, as in a key file line.
    static TicketKey from_bytes(std::span<const uint8_t, kTicketKeyBytes> bytes);
    // A fresh random key (the DRBG for secrets, RAND_priv_bytes).
    static Result<TicketKey> generate();
};

// [0] encrypts new tickets; every entry decrypts. Immutable once published: rotation builds a new
// list, so a handshake that took a snapshot never sees it change underneath.
using TicketKeys = std::vector<std::shared_ptr<const TicketKey>>;

class TicketKeyStore {
public:
    using Clock = std::function<std::chrono::steady_clock::time_point()>;
    struct Schedule {
        std::chrono::seconds every;  // a new encryption key this often
        size_t keep_previous;        // older keys kept for decryption
    };
    // The process's generated keys: a new one every 12 h, the previous two kept (so a ticket is
    // decryptable for 24 to 36 h after it was made; OpenSSL's own session lifetime, 2 h, ends
    // resumption earlier). Created on first use and never replaced, so every SSL_CTX built by a
    // reload uses the same keys.
    static constexpr Schedule kProcessSchedule{std::chrono::hours(12), 2};
    static const std::shared_ptr<TicketKeyStore>& process();

    // Fixed keys, e.g. from a key file: never rotated here (the operator rotates the file).
    explicit TicketKeyStore(TicketKeys fixed);
    // Generated keys on `schedule`; `clock` is injectable for tests.
    explicit TicketKeyStore(Schedule schedule, Clock clock = std::chrono::steady_clock::now);

    // The keys to use now. A generated store rotates first when the schedule says so (a
    // long-idle process jumps straight to fresh keys: keys older than the schedule allows are
    // dropped, never used).
    std::shared_ptr<const TicketKeys> keys();
    // Rotates if due (the run loop calls it on the schedule, so retired keys are dropped and
    // scrubbed even when no handshake asks for keys). No-op for fixed keys.
    void rotate_if_due() { (void)keys(); }
    // When the next rotation is due; none for fixed keys.
    std::optional<std::chrono::steady_clock::time_point> next_rotation() const;

private:
    void rotate_locked(std::chrono::steady_clock::time_point now);

    mutable std::mutex mu_;
    std::shared_ptr<const TicketKeys> keys_;
    std::optional<Schedule> schedule_;
    Clock clock_;
    std::chrono::steady_clock::time_point current_since_{};  // when keys_[0] took over (generated)
};

// Makes `ctx` encrypt and decrypt its tickets with `store`'s keys (the context holds a reference
// to the store). False if OpenSSL refused.
bool use_ticket_keys(SSL_CTX* ctx, std::shared_ptr<TicketKeyStore> store);

// The SSL_CTX_set_tlsext_ticket_key_evp_cb callback use_ticket_keys() installs; public for tests.
// enc = 1: fills key_name and iv with the first key's name and a random IV, initialises both
// contexts, returns 1 (0 = no ticket when there is no key, -1 on error). enc = 0: finds the key
// named key_name: 1 if it is the first, 2 if an older one (accepted, and a new ticket is issued),
// 0 if no key has that name (the ticket is ignored: full handshake), -1 on error.
int ticket_key_callback(SSL* ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                        EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int enc);

}  // namespace ztp::crypto
