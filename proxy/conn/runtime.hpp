// Runtime: the immutable snapshot workers serve from: the policy, each listener's TLS contexts
// and router, and each backend's rotation counter. A connection keeps the snapshot it started
// with alive (shared_ptr), so a later reload never changes a live connection's rules.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/policy.hpp"
#include "config/policy_loader.hpp"
#include "crypto/tls_context.hpp"
#include "proxy/conn/router.hpp"
#include "proxy/redact/rule_set.hpp"

namespace ztp::conn {

struct BackendRuntime {
    const config::Backend* config = nullptr;
    mutable std::atomic<uint32_t> next{0};  // round-robin start index across connections
};

struct ListenerRuntime {
    const config::Listener* config = nullptr;
    std::shared_ptr<crypto::ServerTlsContext> tls;
    std::unique_ptr<Router> router;
};

class Runtime {
public:
    // Validates the policy and builds every TLS context; problems are appended, null if any.
    static std::shared_ptr<const Runtime> build(config::Policy policy, std::vector<config::Diagnostic>& problems);

    const config::Policy& policy() const { return policy_; }
    const std::vector<ListenerRuntime>& listeners() const { return listeners_; }
    const BackendRuntime* backend(const std::string& name) const;
    // Compiled redaction rules (databases are read-only, shared by every worker).
    const redact::RuleSet& rules() const { return *rules_; }

private:
    Runtime() = default;
    config::Policy policy_;
    std::vector<ListenerRuntime> listeners_;
    std::vector<std::unique_ptr<BackendRuntime>> backends_;
    std::shared_ptr<const redact::RuleSet> rules_;
};

}  // namespace ztp::conn
