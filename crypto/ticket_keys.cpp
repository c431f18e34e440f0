#include "crypto/ticket_keys.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>

namespace ztp::crypto {

namespace {

// Where an SSL_CTX keeps its store: a heap std::shared_ptr owned by the context (freed with it),
// so a store lives as long as any context, or any SSL of one, can still ask it for keys.
int store_index() {
    static const int index = CRYPTO_get_ex_new_index(
        CRYPTO_EX_INDEX_SSL_CTX, 0, nullptr, nullptr, nullptr,
        [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
            delete static_cast<std::shared_ptr<TicketKeyStore>*>(ptr);
        });
    return index;
}

TicketKeyStore* store_of(SSL* ssl) {
    void* data = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), store_index());
    auto* held = static_cast<std::shared_ptr<TicketKeyStore>*>(data);
    return held ? held->get() : nullptr;
}

// Fetched once: an implicit fetch per ticket would search the provider tables every handshake.
const EVP_CIPHER* ticket_cipher() {
    static EVP_CIPHER* const cipher = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
    return cipher;
}

bool init_mac(EVP_MAC_CTX* mac, const TicketKey& key) {
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<uint8_t*>(key.hmac.view().data()),
                                          key.hmac.size()),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(mac, params) == 1;
}

}  // namespace

TicketKey TicketKey::from_bytes(std::span<const uint8_t, kTicketKeyBytes> bytes) {
    TicketKey k;
    std::copy_n(bytes.begin(), kTicketKeyNameBytes, k.name.begin());
    (void)k.hmac.assign(bytes.subspan(kTicketKeyNameBytes, kTicketHmacKeyBytes));  // fits: 32 < capacity
    (void)k.aes.assign(bytes.subspan(kTicketKeyNameBytes + kTicketHmacKeyBytes, kTicketAesKeyBytes));
    return k;
}

Result<TicketKey> TicketKey::generate() {
    TicketKey k;
    // The name only has to be unique among the keys in use; random makes it so across a fleet too.
    if (RAND_bytes(k.name.data(), static_cast<int>(k.name.size())) != 1 ||
        RAND_priv_bytes(k.hmac.writable(kTicketHmacKeyBytes).data(), kTicketHmacKeyBytes) != 1 ||
        RAND_priv_bytes(k.aes.writable(kTicketAesKeyBytes).data(), kTicketAesKeyBytes) != 1)
        return make_error(EIO, "random bytes for a session ticket key");
    return k;
}

const std::shared_ptr<TicketKeyStore>& TicketKeyStore::process() {
    static const auto store = std::make_shared<TicketKeyStore>(kProcessSchedule);
    return store;
}

TicketKeyStore::TicketKeyStore(TicketKeys fixed) : keys_(std::make_shared<const TicketKeys>(std::move(fixed))) {}

TicketKeyStore::TicketKeyStore(Schedule schedule, Clock clock)
    : keys_(std::make_shared<const TicketKeys>()), schedule_(schedule), clock_(std::move(clock)) {
    std::lock_guard lock(mu_);
    rotate_locked(clock_());
}

std::shared_ptr<const TicketKeys> TicketKeyStore::keys() {
    std::lock_guard lock(mu_);
    if (schedule_) rotate_locked(clock_());
    return keys_;
}

std::optional<std::chrono::steady_clock::time_point> TicketKeyStore::next_rotation() const {
    std::lock_guard lock(mu_);
    if (!schedule_) return std::nullopt;
    return current_since_ + schedule_->every;
}

void TicketKeyStore::rotate_locked(std::chrono::steady_clock::time_point now) {
    const bool first = keys_->empty();  // at start, or after key generation failed
    if (!first && now - current_since_ < schedule_->every) return;
    auto fresh = TicketKey::generate();
    if (!fresh) return;  // keep serving the current keys; the next call tries again
    auto next = std::make_shared<TicketKeys>();
    next->push_back(std::make_shared<const TicketKey>(std::move(fresh).value()));
    if (first) {
        current_since_ = now;
    } else {
        // Whole periods since the current key took over. An old key at position i would now be at
        // i + periods; what passes keep_previous has outlived its window and goes (a process idle
        // for days starts over with one fresh key rather than promoting keys nobody used).
        const auto periods = static_cast<size_t>((now - current_since_) / schedule_->every);
        const size_t kept = periods > schedule_->keep_previous ? 0 : schedule_->keep_previous + 1 - periods;
        for (size_t i = 0; i < std::min(kept, keys_->size()); ++i) next->push_back((*keys_)[i]);
        current_since_ += schedule_->every * periods;
    }
    keys_ = std::move(next);
}

bool use_ticket_keys(SSL_CTX* ctx, std::shared_ptr<TicketKeyStore> store) {
    auto* held = new std::shared_ptr<TicketKeyStore>(std::move(store));
    if (SSL_CTX_set_ex_data(ctx, store_index(), held) != 1) {
        delete held;
        return false;
    }
    return SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &ticket_key_callback) == 1;
}

int ticket_key_callback(SSL* ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                        EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int enc) {
    TicketKeyStore* store = store_of(ssl);
    const EVP_CIPHER* aes = ticket_cipher();
    if (store == nullptr || aes == nullptr) return -1;
    const auto keys = store->keys();  // a snapshot: rotation cannot free these keys under us
    if (enc == 1) {
        if (keys->empty()) return 0;  // no ticket rather than a ticket nobody can read
        const TicketKey& key = *keys->front();
        const int iv_len = EVP_CIPHER_get_iv_length(aes);
        if (RAND_bytes(iv, iv_len) != 1) return -1;
        std::memcpy(key_name, key.name.data(), key.name.size());
        if (EVP_EncryptInit_ex(cipher, aes, nullptr, key.aes.view().data(), iv) != 1 || !init_mac(mac, key))
            return -1;
        return 1;
    }
    // Names are public (they lead every ticket), so a plain comparison is fine; OpenSSL checks the
    // HMAC over the whole ticket before anything is decrypted or trusted.
    for (size_t i = 0; i < keys->size(); ++i) {
        const TicketKey& key = *(*keys)[i];
        if (std::memcmp(key_name, key.name.data(), key.name.size()) != 0) continue;
        if (!init_mac(mac, key) || EVP_DecryptInit_ex(cipher, aes, nullptr, key.aes.view().data(), iv) != 1)
            return -1;
        return i == 0 ? 1 : 2;  // 2: made by a retiring key, so the client gets a current ticket
    }
    return 0;
}

}  // namespace ztp::crypto
