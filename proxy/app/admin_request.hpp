// The admin endpoint's request head: "METHOD /path HTTP/1.x" and headers up to the blank line.
// Only the request line matters (no bodies, no keep-alive); anything malformed is refused whole.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ztp::app {

struct AdminRequest {
    std::string method;  // upper-case token, e.g. "GET"
    std::string path;    // starts with '/', the query string cut off
};

// `head`: the bytes received up to and including "\r\n\r\n". nullopt: not a request we answer.
std::optional<AdminRequest> parse_admin_request(std::string_view head);

}  // namespace ztp::app
