// Router: SNI → backend for one listener. Exact names win over "*.suffix" wildcards, which win
// over the default route. Built once per policy snapshot; read-only afterwards.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/policy.hpp"

namespace ztp::conn {

class Router {
public:
    Router(const config::Policy& policy, const std::string& listener_name);

    // The backend name for this SNI (empty SNI allowed), or nullptr when no route takes it.
    const std::string* route(std::string_view sni) const;

private:
    struct Entry {
        std::string pattern;
        std::string backend;
    };
    std::vector<Entry> exact_;
    std::vector<Entry> wildcard_;
    std::string default_backend_;
    bool has_default_ = false;
};

}  // namespace ztp::conn
