#include "proxy/app/check_command.hpp"

#include <iostream>

#include "config/policy_loader.hpp"
#include "proxy/app/privileges.hpp"
#include "proxy/conn/runtime.hpp"
#include "proxy/redact/rule_set.hpp"

namespace ztp::app {

int check_command(const std::string& path) {
    auto outcome = config::load_policy_file(path);
    std::vector<config::Diagnostic> problems = std::move(outcome.problems);
    size_t listeners = 0, backends = 0, routes = 0;
    std::vector<std::string> route_notes;
    if (outcome.policy) {
        route_notes = redact::describe_routes(*outcome.policy);
        listeners = outcome.policy->listeners.size();
        backends = outcome.policy->backends.size();
        routes = outcome.policy->routes.size();
        // The user and group `run` would switch to must exist on this host, as the files must.
        std::string why;
        resolve_identity(outcome.policy->process, &why);
        if (!why.empty()) problems.push_back({outcome.policy->process.loc, why});
        // The same construction `run` does: certificates, keys, ciphers are checked for real.
        conn::Runtime::build(std::move(*outcome.policy), problems);
    }
    for (const auto& p : problems) std::cout << p.str() << "\n";
    if (!problems.empty()) {
        std::cout << path << ": " << problems.size() << " problem(s)\n";
        return 1;
    }
    std::cout << path << ": OK (" << listeners << " listener(s), " << backends << " backend(s), " << routes
              << " route(s))\n";
    for (const auto& n : route_notes) std::cout << "  " << n << "\n";
    return 0;
}

}  // namespace ztp::app
