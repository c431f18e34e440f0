// Human units shared by the policy file and CLI flags: durations ("250ms", "5s", "2m", "1h") and
// byte sizes (plain integers, or "64KiB", "1MiB", "4k").
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ztp::config {

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text, std::string* why = nullptr);
std::optional<uint64_t> parse_size(std::string_view text, std::string* why = nullptr);

}  // namespace ztp::config
