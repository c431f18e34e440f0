// libFuzzer target: any byte string handed to the policy loader must come back as a LoadOutcome
// (a policy or problems), never a crash, hang, leak or escaping exception.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config/policy_loader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto outcome = ztp::config::load_policy_text(text, "fuzz.toml");
    // The contract the CLI relies on: exactly one of "a policy" and "problems".
    if (outcome.policy.has_value() == !outcome.problems.empty()) std::abort();
    for (const auto& d : outcome.problems)
        if (d.message.empty() || d.loc.file != "fuzz.toml") std::abort();
    // A loaded policy must also pass the standalone validator (quick mode relies on it).
    if (outcome.policy && !ztp::config::validate_policy(*outcome.policy).empty()) std::abort();
    return 0;
}
