#include "proxy/conn/router.hpp"

namespace ztp::conn {

Router::Router(const config::Policy& policy, const std::string& listener_name) {
    for (size_t i = 0; i < policy.routes.size(); ++i) {
        const auto& r = policy.routes[i];
        if (!r.listener.empty() && r.listener != listener_name) continue;
        if (r.is_default) {
            // A route naming this listener beats an all-listeners default.
            if (!has_default_ || !r.listener.empty()) default_ = {r.backend, i};
            has_default_ = true;
            continue;
        }
        for (const auto& n : r.server_names) {
            bool wildcard = n.size() > 2 && n[0] == '*' && n[1] == '.';
            (wildcard ? wildcard_ : exact_).push_back({n, {r.backend, i}});
        }
    }
}

const Router::Target* Router::route(std::string_view sni) const {
    if (!sni.empty()) {
        for (const auto& e : exact_)
            if (e.pattern == sni) return &e.target;
        for (const auto& e : wildcard_)
            if (config::server_name_matches(e.pattern, sni)) return &e.target;
    }
    return has_default_ ? &default_ : nullptr;
}

}  // namespace ztp::conn
