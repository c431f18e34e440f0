// The admin endpoint's bearer token file: one line, the token (a trailing newline is ignored, as
// `kubectl create secret --from-file` and `echo >` leave one). Shared by the policy loader
// ([admin] token_file) and the command line (--admin-token-file), read at start and on reload.
#pragma once

#include <optional>
#include <string>

namespace ztp::config {

inline constexpr size_t kMinAdminToken = 16;    // shorter tokens can be guessed over the network
inline constexpr size_t kMaxAdminToken = 4096;

// The token, or nullopt with `why` ("cannot open: ...", "is empty", ...). `why` never contains
// the file's contents: a token with a typo must not end up in a log.
std::optional<std::string> read_admin_token(const std::string& path, std::string* why);

}  // namespace ztp::config
