#include "proxy/base/log.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <mutex>

namespace ztp::log {

namespace {

std::atomic<Format> g_format{Format::text};
std::mutex g_mutex;

std::string utc_timestamp(spdlog::log_clock::time_point tp) {
    auto secs = std::chrono::time_point_cast<std::chrono::seconds>(tp);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(tp - secs).count();
    std::time_t t = spdlog::log_clock::to_time_t(tp);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[40];
    size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms));
    return buf;
}

// One JSON object per line. The message is escaped by nlohmann::json, so a hostile SNI value
// or peer-supplied string can never break the line structure.
class JsonFormatter final : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
        nlohmann::json j;
        j["ts"] = utc_timestamp(msg.time);
        j["level"] = std::string(spdlog::level::to_string_view(msg.level).data(),
                                 spdlog::level::to_string_view(msg.level).size());
        j["logger"] = std::string(msg.logger_name.data(), msg.logger_name.size());
        j["msg"] = std::string(msg.payload.data(), msg.payload.size());
        auto s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        dest.append(s.data(), s.data() + s.size());
        dest.push_back('\n');
    }
    std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

// The access log writes fully formed lines (text or JSON) itself: the formatter adds nothing.
class RawFormatter final : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
        dest.append(msg.payload.data(), msg.payload.data() + msg.payload.size());
        dest.push_back('\n');
    }
    std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<RawFormatter>(); }
};

std::unique_ptr<spdlog::formatter> make_formatter(Format f) {
    if (f == Format::json) return std::make_unique<JsonFormatter>();
    return std::make_unique<spdlog::pattern_formatter>("%Y-%m-%dT%H:%M:%S.%eZ %l %n: %v",
                                                       spdlog::pattern_time_type::utc);
}

std::shared_ptr<spdlog::sinks::sink> stderr_sink() {
    static auto s = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    return s;
}

std::shared_ptr<spdlog::sinks::sink> stdout_sink() {
    static auto s = std::make_shared<spdlog::sinks::stdout_sink_mt>();
    return s;
}

constexpr const char* kNames[] = {"main", "conn", "tls", "config"};

std::shared_ptr<spdlog::logger> ensure(const char* name, std::shared_ptr<spdlog::sinks::sink> sink) {
    auto l = spdlog::get(name);
    if (!l) {
        l = std::make_shared<spdlog::logger>(name, std::move(sink));
        spdlog::register_logger(l);
    }
    return l;
}

}  // namespace

bool setup(const std::string& level, Format format) {
    auto lvl = spdlog::level::from_str(level);
    // spdlog maps unknown names to "off"; only accept "off" when it was asked for.
    if (lvl == spdlog::level::off && level != "off") return false;
    std::lock_guard lock(g_mutex);
    g_format = format;
    for (const char* n : kNames) {
        auto l = ensure(n, stderr_sink());
        l->set_level(lvl);
        l->set_formatter(make_formatter(format));
        l->flush_on(spdlog::level::info);
    }
    auto a = ensure("access", stdout_sink());
    a->set_level(spdlog::level::info);
    a->set_formatter(std::make_unique<RawFormatter>());
    a->flush_on(spdlog::level::info);
    return true;
}

std::shared_ptr<spdlog::logger> get(const char* name) {
    std::lock_guard lock(g_mutex);
    return ensure(name, stderr_sink());
}

std::shared_ptr<spdlog::logger> access() {
    std::lock_guard lock(g_mutex);
    return ensure("access", stdout_sink());
}

Format format() { return g_format; }

std::string timestamp_now() { return utc_timestamp(spdlog::log_clock::now()); }

}  // namespace ztp::log
