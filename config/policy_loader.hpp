// Loads and validates a TOML policy file into config::Policy. toml++ is used only behind this
// header. Every problem is reported with its file:line:col; loading never throws.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/policy.hpp"

namespace ztp::config {

struct Diagnostic {
    SourceLoc loc;
    std::string message;
    std::string str() const { return loc.str() + ": " + message; }
};

struct LoadOutcome {
    std::optional<Policy> policy;          // set only when problems is empty
    std::vector<Diagnostic> problems;
};

// Reads `path`; relative certificate/key paths are resolved against the file's directory.
LoadOutcome load_policy_file(const std::string& path);
// Same, from text already in memory; `path` is used for messages and relative paths.
LoadOutcome load_policy_text(std::string_view text, const std::string& path);

// Semantic checks that apply to any Policy, however it was built (file, quick mode, demo):
// names unique, references resolve, every listener reachable by some route, versions ordered.
std::vector<Diagnostic> validate_policy(const Policy& policy);

}  // namespace ztp::config
