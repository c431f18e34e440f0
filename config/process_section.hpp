// Internal to config/: the [process] table (user, group, seccomp). Its own file because it is the
// one section about the host rather than the traffic.
#pragma once

#include <string>
#include <string_view>

#include "config/toml_reader.hpp"

namespace ztp::config::detail {

void read_process(TomlReader& r, const toml::table& t, Process& out);

// Why `value` cannot be the [process] `key` ("user" or "group"); empty when it can. Shared with
// validate(), which checks policies built in code. Whether the name exists is the host's business
// (proxy/app/privileges.hpp): `check` and `run` resolve it there.
std::string identity_problem(std::string_view key, std::string_view value);

}  // namespace ztp::config::detail
