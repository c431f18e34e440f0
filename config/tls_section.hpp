// Internal to config/: a listener's [listener.tls] table and its [[listener.tls.certificate]]
// entries, and the SNI server-name lists. Its own file: the section that configures the
// handshake (versions, ciphers, ALPN, tickets, kTLS, record path, mTLS, certificates). The
// certificate and key files are only named here; the crypto layer opens them, so `check` and
// `run` fail the same way.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/toml_reader.hpp"

namespace ztp::config::detail {

// `base_dir`: the policy file's directory, against which relative file paths are resolved.
void read_tls(TomlReader& r, const toml::table& t, const std::string& base_dir, TlsSettings& out);

// `server_names` of a certificate or a route: names as they appear in SNI, lower-cased DNS labels
// with "*." allowed only in front. A bad name is reported at its value and still returned (the
// load fails anyway), so the table does not look name-less to later checks.
std::vector<std::string> read_server_names(TomlReader& r, const toml::table& t, std::string_view where);

}  // namespace ztp::config::detail
