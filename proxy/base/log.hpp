// Logging: named spdlog loggers ("main", "conn", "tls", "config", "access"). Operational logs go
// to stderr; the access log (one line per connection) goes to stdout so sidecar deployments can
// ship it separately. Nothing here may ever be passed payload bytes or key material.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace ztp::log {

enum class Format { text, json };

// Creates the loggers; safe to call again (e.g. after a reload changes the level or format).
// Returns false (and leaves the old set-up) when `level` is not a known level name.
bool setup(const std::string& level, Format format);

std::shared_ptr<spdlog::logger> get(const char* name);  // "main", "conn", "tls", "config"
std::shared_ptr<spdlog::logger> access();
Format format();

// "2026-11-22T08:30:00.123Z": the timestamp format every log line uses.
std::string timestamp_now();

// Per-logger shorthands used across the code base.
inline spdlog::logger& main() { static auto l = get("main"); return *l; }
inline spdlog::logger& conn() { static auto l = get("conn"); return *l; }
inline spdlog::logger& tls() { static auto l = get("tls"); return *l; }

}  // namespace ztp::log
