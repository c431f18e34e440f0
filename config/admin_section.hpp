// Internal to config/: the [admin] table (the operator's endpoint: addresses, token, caps). Its own
// file because it is the one section about who may operate the proxy rather than the traffic.
#pragma once

#include <string>

#include "config/toml_reader.hpp"

namespace ztp::config::detail {

// `base_dir`: the policy file's directory, against which relative paths are resolved. The token
// file is read here, so `ztproxy check` reports a missing, empty or unreadable one at its value.
void read_admin(TomlReader& r, const toml::table& t, const std::string& base_dir, Admin& out);

}  // namespace ztp::config::detail
