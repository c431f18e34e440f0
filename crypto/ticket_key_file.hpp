// The session ticket key file ([listener.tls] session_ticket_keys, --session-ticket-keys): one
// base64 key per line, 80 bytes each (16 name, 32 HMAC-SHA256, 32 AES-256). The first key encrypts
// new tickets, every key decrypts. Blank lines and lines starting with '#' are ignored.
//
//   # rotate: prepend a new key (openssl rand 80 | base64 -w0), reload; drop the last one later
//   0T2c…  (108 characters)
//
// Errors name the line (and column) of the key file, never its content: the file is a secret.
#pragma once

#include <string>
#include <string_view>

#include "crypto/ticket_keys.hpp"

namespace ztp::crypto {

struct TicketKeyFile {
    TicketKeys keys;          // empty when error is set
    std::string error;        // e.g. "line 3: key is 48 bytes, expected 80 (...)"
    bool world_readable = false;  // the caller warns: anyone on the host could forge sessions
};

// Parses the text of a key file. The text is the caller's to scrub.
TicketKeyFile parse_ticket_key_file(std::string_view text);

// Reads and parses `path`; the bytes read are scrubbed before returning.
TicketKeyFile load_ticket_key_file(const std::string& path);

}  // namespace ztp::crypto
