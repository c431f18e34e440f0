#include "proxy/conn/runtime.hpp"

namespace ztp::conn {

std::shared_ptr<const Runtime> Runtime::build(config::Policy policy, std::vector<config::Diagnostic>& problems) {
    size_t before = problems.size();
    auto semantic = config::validate_policy(policy);
    problems.insert(problems.end(), semantic.begin(), semantic.end());
    if (problems.size() != before) return nullptr;

    std::shared_ptr<Runtime> rt(new Runtime());
    rt->policy_ = std::move(policy);
    std::string why;
    auto rules = redact::RuleSet::compile(rt->policy_, &why);
    if (!rules) {
        problems.push_back({config::SourceLoc{rt->policy_.source, 1, 1}, "redaction rules: " + why});
        return nullptr;
    }
    rt->rules_ = std::move(rules).value();
    for (const auto& b : rt->policy_.backends) {
        auto br = std::make_unique<BackendRuntime>();
        br->config = &b;
        rt->backends_.push_back(std::move(br));
    }
    for (const auto& l : rt->policy_.listeners) {
        ListenerRuntime lr;
        lr.config = &l;
        lr.router = std::make_unique<Router>(rt->policy_, l.name);
        const Router* router = lr.router.get();
        // Names no route takes are refused inside the ClientHello callback.
        lr.tls = crypto::ServerTlsContext::build(
            l, [router](std::string_view sni) { return router->route(sni) != nullptr; }, problems);
        rt->listeners_.push_back(std::move(lr));
    }
    if (problems.size() != before) return nullptr;
    return rt;
}

const BackendRuntime* Runtime::backend(const std::string& name) const {
    for (const auto& b : backends_)
        if (b->config->name == name) return b.get();
    return nullptr;
}

}  // namespace ztp::conn
