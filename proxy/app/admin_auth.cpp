#include "proxy/app/admin_auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "proxy/app/admin_request.hpp"

namespace ztp::app {

AdminToken::AdminToken(std::string_view token) : digest_(hash(token)) {}

AdminToken::Digest AdminToken::hash(std::string_view bytes) {
    Digest d{};
    unsigned int len = 0;
    // SHA-256 cannot fail on a valid digest and memory we own; an all-zero digest would only make
    // every comparison fail (no token hashes to it), never succeed.
    EVP_Digest(bytes.data(), bytes.size(), d.data(), &len, EVP_sha256(), nullptr);
    return d;
}

bool AdminToken::accepts(const std::optional<std::string>& authorization) const {
    if (!digest_) return true;
    if (!authorization) return false;
    const auto token = bearer_token(*authorization);
    if (!token) return false;
    const Digest presented = hash(*token);
    return CRYPTO_memcmp(presented.data(), digest_->data(), presented.size()) == 0;
}

}  // namespace ztp::app
