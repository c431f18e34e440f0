#pragma once

#include <string>

namespace ztp::app {

// `ztproxy check -c FILE`: loads and validates the policy exactly as `run` would, including
// reading every certificate and key. Prints one `file:line:col: message` per problem to stdout.
// Returns 0 when valid, 1 otherwise.
int check_command(const std::string& path);

}  // namespace ztp::app
