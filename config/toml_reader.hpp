// Internal to config/: typed, position-aware access to a toml++ table. Every getter reports its
// own problems (unknown key, wrong type, missing required key) and returns nothing on error, so
// the section readers in policy_loader.cpp stay a flat list of fields.
#pragma once

#include <toml++/toml.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/policy_loader.hpp"

namespace ztp::config::detail {

// Small text helpers shared by the section readers, defined once here.
inline std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }
// ASCII only, never the locale: server names and cipher names compare the same on every host.
inline char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
std::string ascii_lowercase(std::string_view s);
// A relative path in a policy is relative to the policy file's directory (`base_dir`).
std::string resolve_path(const std::string& base_dir, const std::string& file);

struct StringItem {
    std::string value;
    toml::source_region where;
};

class TomlReader {
public:
    TomlReader(std::string path, std::vector<Diagnostic>& out) : path_(std::move(path)), out_(out) {}

    const std::string& path() const { return path_; }
    SourceLoc loc(const toml::source_region& r) const;
    void error(const toml::source_region& r, std::string message);

    // `where` names the table in messages: "root table", "[limits]", "[[listener]]"...
    void check_keys(const toml::table& t, std::initializer_list<std::string_view> allowed,
                    std::string_view where);

    // Absent → nullopt (an error only when `required`); wrong type → error at the value.
    const toml::node* get(const toml::table& t, std::string_view key, std::string_view where, bool required);
    std::optional<std::string> string(const toml::table& t, std::string_view key, std::string_view where,
                                      bool required = false);
    std::optional<int64_t> integer(const toml::table& t, std::string_view key, std::string_view where,
                                   bool required = false);
    std::optional<bool> boolean(const toml::table& t, std::string_view key, std::string_view where);
    // A non-empty string (names, references, file paths): "" is reported at the value.
    std::optional<std::string> name(const toml::table& t, std::string_view key, std::string_view where,
                                    bool required);
    // A string that must be one of `options`: returns its index. Anything else is reported at the
    // value as "'key' must be "a", "b" or "c"".
    std::optional<size_t> choice(const toml::table& t, std::string_view key, std::string_view where,
                                 std::initializer_list<std::string_view> options);
    std::optional<std::vector<StringItem>> strings(const toml::table& t, std::string_view key,
                                                   std::string_view where, bool required = false);
    const toml::table* table(const toml::table& t, std::string_view key, std::string_view where,
                             bool required = false);
    // `[[header]]` arrays; each element must be a table. Wrong elements are reported and skipped.
    // `header` is the full dotted name for the hint in messages ("listener.tls.certificate").
    std::vector<const toml::table*> tables(const toml::table& t, std::string_view key, std::string_view where,
                                           std::string_view header, bool required = false);

    void type_error(std::string_view key, const toml::node& n, std::string_view expected);

    // Where `key`'s value is; `t` must contain `key`.
    static const toml::source_region& at(const toml::table& t, std::string_view key) {
        return t.get(key)->source();
    }

private:
    std::string path_;
    std::vector<Diagnostic>& out_;
};

}  // namespace ztp::config::detail
