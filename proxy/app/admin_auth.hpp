// AdminToken: the admin endpoint's bearer token, kept as its SHA-256 digest. A presented token is
// hashed too and the two digests compared in constant time (CRYPTO_memcmp): how long a refusal
// takes says nothing about how many leading bytes were right, nor about the token's length.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace ztp::app {

class AdminToken {
public:
    AdminToken() = default;  // no token: nothing is checked
    explicit AdminToken(std::string_view token);

    bool required() const { return digest_.has_value(); }
    // Does this Authorization header value carry the token ("Bearer TOKEN")? Always true when no
    // token is required.
    bool accepts(const std::optional<std::string>& authorization) const;

private:
    using Digest = std::array<unsigned char, 32>;
    static Digest hash(std::string_view bytes);
    std::optional<Digest> digest_;
};

}  // namespace ztp::app
