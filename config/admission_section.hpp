// Internal to config/: a listener's [listener.admission] table (allow/deny CIDR lists, per-source
// rate limit). Its own file: the one section that is enforced outside ztproxy's own code (the
// kernel's socket filter, bpf/), so its field rules follow bpf::AdmissionPolicy.
#pragma once

#include "config/toml_reader.hpp"

namespace ztp::config::detail {

void read_admission(TomlReader& r, const toml::table& t, Admission& out);

}  // namespace ztp::config::detail
