#include "config/toml_reader.hpp"

#include <algorithm>
#include <filesystem>

namespace ztp::config::detail {

namespace {

const char* type_name(toml::node_type t) {
    switch (t) {
        case toml::node_type::none: return "nothing";
        case toml::node_type::table: return "a table";
        case toml::node_type::array: return "an array";
        case toml::node_type::string: return "a string";
        case toml::node_type::integer: return "an integer";
        case toml::node_type::floating_point: return "a float";
        case toml::node_type::boolean: return "a boolean";
        case toml::node_type::date: return "a date";
        case toml::node_type::time: return "a time";
        case toml::node_type::date_time: return "a date-time";
    }
    return "a value";
}

}  // namespace

std::string ascii_lowercase(std::string_view s) {
    std::string r(s);
    std::transform(r.begin(), r.end(), r.begin(), ascii_lower);
    return r;
}

std::string resolve_path(const std::string& base_dir, const std::string& file) {
    std::filesystem::path p(file);
    return (p.is_absolute() ? p : std::filesystem::path(base_dir) / p).lexically_normal().string();
}

SourceLoc TomlReader::loc(const toml::source_region& r) const {
    return SourceLoc{path_, static_cast<int>(r.begin.line), static_cast<int>(r.begin.column)};
}

void TomlReader::error(const toml::source_region& r, std::string message) {
    out_.push_back({loc(r), std::move(message)});
}

void TomlReader::type_error(std::string_view key, const toml::node& n, std::string_view expected) {
    error(n.source(),
          "'" + std::string(key) + "': expected " + std::string(expected) + ", got " + type_name(n.type()));
}

void TomlReader::check_keys(const toml::table& t, std::initializer_list<std::string_view> allowed,
                            std::string_view where) {
    for (auto&& [k, v] : t) {
        if (std::find(allowed.begin(), allowed.end(), k.str()) != allowed.end()) continue;
        error(k.source(), "unknown key '" + std::string(k.str()) + "' in " + std::string(where));
    }
}

const toml::node* TomlReader::get(const toml::table& t, std::string_view key, std::string_view where,
                                  bool required) {
    const toml::node* n = t.get(key);
    if (!n && required)
        error(t.source(), "missing required key '" + std::string(key) + "' in " + std::string(where));
    return n;
}

std::optional<std::string> TomlReader::name(const toml::table& t, std::string_view key, std::string_view where,
                                            bool required) {
    auto v = string(t, key, where, required);
    if (v && v->empty()) {
        error(at(t, key), in_quotes(key) + " must not be empty");
        return std::nullopt;
    }
    return v;
}

std::optional<std::string> TomlReader::string(const toml::table& t, std::string_view key,
                                              std::string_view where, bool required) {
    const toml::node* n = get(t, key, where, required);
    if (!n) return std::nullopt;
    if (auto* s = n->as_string()) return s->get();
    type_error(key, *n, "a string");
    return std::nullopt;
}

std::optional<int64_t> TomlReader::integer(const toml::table& t, std::string_view key, std::string_view where,
                                           bool required) {
    const toml::node* n = get(t, key, where, required);
    if (!n) return std::nullopt;
    if (auto* i = n->as_integer()) return i->get();
    type_error(key, *n, "an integer");
    return std::nullopt;
}

std::optional<bool> TomlReader::boolean(const toml::table& t, std::string_view key, std::string_view where) {
    const toml::node* n = get(t, key, where, false);
    if (!n) return std::nullopt;
    if (auto* b = n->as_boolean()) return b->get();
    type_error(key, *n, "true or false");
    return std::nullopt;
}

std::optional<size_t> TomlReader::choice(const toml::table& t, std::string_view key, std::string_view where,
                                         std::initializer_list<std::string_view> options) {
    auto v = string(t, key, where);
    if (!v) return std::nullopt;
    std::string expected;
    size_t i = 0;
    for (auto option : options) {
        if (*v == option) return i;
        if (i > 0) expected += i + 1 == options.size() ? " or " : ", ";
        expected += "\"" + std::string(option) + "\"";
        ++i;
    }
    error(t.get(key)->source(), "'" + std::string(key) + "' must be " + expected);
    return std::nullopt;
}

std::optional<std::vector<StringItem>> TomlReader::strings(const toml::table& t, std::string_view key,
                                                           std::string_view where, bool required) {
    const toml::node* n = get(t, key, where, required);
    if (!n) return std::nullopt;
    const toml::array* a = n->as_array();
    if (!a) {
        type_error(key, *n, "an array of strings");
        return std::nullopt;
    }
    std::vector<StringItem> items;
    bool ok = true;
    for (size_t i = 0; i < a->size(); ++i) {
        const toml::node& e = *a->get(i);
        if (auto* s = e.as_string()) {
            items.push_back({s->get(), e.source()});
        } else {
            type_error(std::string(key) + "[" + std::to_string(i) + "]", e, "a string");
            ok = false;
        }
    }
    if (!ok) return std::nullopt;
    return items;
}

const toml::table* TomlReader::table(const toml::table& t, std::string_view key, std::string_view where,
                                     bool required) {
    const toml::node* n = get(t, key, where, required);
    if (!n) return nullptr;
    if (auto* tbl = n->as_table()) return tbl;
    type_error(key, *n, "a table");
    return nullptr;
}

std::vector<const toml::table*> TomlReader::tables(const toml::table& t, std::string_view key,
                                                   std::string_view where, std::string_view header,
                                                   bool required) {
    std::vector<const toml::table*> result;
    const toml::node* n = get(t, key, where, required);
    if (!n) return result;
    const toml::array* a = n->as_array();
    if (!a) {
        type_error(key, *n, "an array of tables ([[" + std::string(header) + "]])");
        return result;
    }
    for (size_t i = 0; i < a->size(); ++i) {
        const toml::node& e = *a->get(i);
        if (auto* tbl = e.as_table())
            result.push_back(tbl);
        else
            type_error(std::string(key) + "[" + std::to_string(i) + "]", e, "a table");
    }
    return result;
}

}  // namespace ztp::config::detail
