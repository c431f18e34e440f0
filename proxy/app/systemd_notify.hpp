// systemd's readiness protocol (sd_notify(3), for Type=notify units): READY=1 once every
// listener accepts, RELOADING=1 ... READY=1 around a SIGHUP reload, STOPPING=1 when draining,
// and STATUS= lines for `systemctl status`. Without $NOTIFY_SOCKET (not started by systemd or a
// compatible supervisor) every call does nothing.
#pragma once

#include <string>

namespace ztp::app::notify {

void ready(const std::string& status);
// RELOADING=1 with MONOTONIC_USEC (systemd ≥ 253 matches it to the reload it asked for);
// ready() ends the reload, whatever its outcome.
void reloading();
void status(const std::string& status);
void stopping(const std::string& status);

}  // namespace ztp::app::notify
