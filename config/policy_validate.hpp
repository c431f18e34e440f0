// Internal to config/: the semantic checks behind validate_policy(), with a switch for the loader.
#pragma once

#include <vector>

#include "config/policy_loader.hpp"

namespace ztp::config::detail {

// `fields_checked`: the loader already reported missing or malformed fields at their exact
// position, so presence checks (empty names, no certificate, no address) are skipped here to
// avoid a second, vaguer message about the same mistake. validate_policy() passes false.
std::vector<Diagnostic> validate(const Policy& policy, bool fields_checked);

// Where problems about the policy as a whole are reported: the file's 1:1, or nowhere (built in code).
SourceLoc policy_loc(const Policy& policy);

}  // namespace ztp::config::detail
