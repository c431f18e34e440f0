// The admin endpoint's request head: "METHOD /path HTTP/1.x" and headers up to the blank line.
// Only the request line and the Authorization header matter (no bodies, no keep-alive); anything
// malformed is refused whole.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ztp::app {

struct AdminRequest {
    std::string method;  // upper-case token, e.g. "GET"
    std::string path;    // starts with '/', the query string cut off
    // The Authorization header's value, surrounding whitespace removed; nullopt when absent.
    std::optional<std::string> authorization;
};

// `head`: the bytes received up to and including "\r\n\r\n". nullopt: not a request we answer
// (also when Authorization appears twice: which one a proxy in front would check is a guess).
std::optional<AdminRequest> parse_admin_request(std::string_view head);

// The token of an "Authorization: Bearer TOKEN" value (scheme case-insensitive, RFC 9110
// §11.1); nullopt for any other scheme or an empty token.
std::optional<std::string_view> bearer_token(std::string_view authorization);

}  // namespace ztp::app
