#include "proxy/app/systemd_notify.hpp"

#include <systemd/sd-daemon.h>

#include <cstring>
#include <ctime>

#include "proxy/base/log.hpp"

namespace ztp::app::notify {

namespace {

void send(const std::string& state) {
    // unset_environment = 0: the variable is read again for every message (reload, stop).
    int rc = sd_notify(0, state.c_str());
    if (rc < 0) log::main().warn("sd_notify: {}", std::strerror(-rc));
}

// A STATUS= value is one line: a newline would start another assignment.
std::string one_line(std::string s) {
    for (char& c : s)
        if (c == '\n') c = ' ';
    return s;
}

}  // namespace

void ready(const std::string& status) { send("READY=1\nSTATUS=" + one_line(status)); }

void reloading() {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const unsigned long long usec =
        static_cast<unsigned long long>(now.tv_sec) * 1000000ull + static_cast<unsigned long long>(now.tv_nsec) / 1000;
    send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\nSTATUS=reloading the policy");
}

void status(const std::string& status) { send("STATUS=" + one_line(status)); }

void stopping(const std::string& status) { send("STOPPING=1\nSTATUS=" + one_line(status)); }

}  // namespace ztp::app::notify
