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

    struct Target {
        std::string backend;  // backend name
        size_t route_index;   // into policy.routes (for the route's redaction rules)
    };

    // The route for this SNI (empty SNI allowed), or nullptr when no route takes it.
    const Target* route(std::string_view sni) const;

private:
    struct Entry {
        std::string pattern;
        Target target;
    };
    std::vector<Entry> exact_;
    std::vector<Entry> wildcard_;
    Target default_;
    bool has_default_ = false;
};

}  // namespace ztp::conn
