// What note_relay_close counts and logs for a client-caused ending. The key_update_unsupported line
// (a client's KeyUpdate on a kernel whose kTLS cannot rekey) is promised at most once per 10 s per
// worker (README, Is kTLS active?) while every such close is counted: a client must not be able to
// flood the operational log. The e2e suites cannot cause it without such a kernel; the counting and
// logging are plain code, pinned here.
#include "proxy/conn/client_records.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <thread>

#include "proxy/base/log.hpp"
#include "proxy/conn/stats.hpp"

namespace ztp::conn {
namespace {

constexpr const char* kUnsupportedLine = "kTLS on this kernel cannot rekey";

// Collects what the "tls" logger writes while it lives.
class TlsLogCapture {
public:
    TlsLogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
        log::tls().sinks().push_back(sink_);
        level_ = log::tls().level();
        log::tls().set_level(spdlog::level::info);
    }
    ~TlsLogCapture() {
        auto& sinks = log::tls().sinks();
        sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
        log::tls().set_level(level_);
    }
    TlsLogCapture(const TlsLogCapture&) = delete;
    TlsLogCapture& operator=(const TlsLogCapture&) = delete;

    size_t lines_with(const std::string& needle) {
        log::tls().flush();
        std::istringstream in(out_.str());
        size_t n = 0;
        for (std::string line; std::getline(in, line);) n += line.find(needle) != std::string::npos;
        return n;
    }

private:
    std::ostringstream out_;
    std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
    spdlog::level::level_enum level_ = spdlog::level::info;
};

// One flood on a fresh thread: the limiter is per thread (each worker has its own).
void flood_from_a_new_worker(int closes) {
    std::thread([closes] {
        for (int i = 0; i < closes; ++i) note_relay_close("key_update_unsupported");
    }).join();
}

TEST(ClientRecords, KeyUpdateUnsupportedIsCountedEveryTimeAndLoggedOncePer10sPerWorker) {
    TlsLogCapture log;
    const uint64_t before = stats().ktls_key_update_closes.load();
    flood_from_a_new_worker(1000);  // well within 10 s
    EXPECT_EQ(stats().ktls_key_update_closes.load() - before, 1000u);
    EXPECT_EQ(log.lines_with(kUnsupportedLine), 1u);
    flood_from_a_new_worker(1000);  // another worker has its own line
    EXPECT_EQ(stats().ktls_key_update_closes.load() - before, 2000u);
    EXPECT_EQ(log.lines_with(kUnsupportedLine), 2u);
}

TEST(ClientRecords, OtherEndingsNeitherCountAsKeyUpdateClosesNorLogTheLine) {
    TlsLogCapture log;
    const uint64_t before = stats().ktls_key_update_closes.load();
    const uint64_t bad = stats().bad_records.load();
    std::thread([] {
        for (const char* reason : {"bad_record", "key_update_flood", "client_close", "backend_close"})
            note_relay_close(reason);
        note_relay_close(nullptr);
    }).join();
    EXPECT_EQ(stats().ktls_key_update_closes.load(), before);
    EXPECT_EQ(stats().bad_records.load() - bad, 1u);
    EXPECT_EQ(log.lines_with(kUnsupportedLine), 0u);
}

}  // namespace
}  // namespace ztp::conn
