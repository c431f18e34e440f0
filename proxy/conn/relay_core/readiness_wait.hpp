// ReadinessWait: how a backend source (ends.hpp BackendSource, sealing.hpp SlotSource) waits for
// its socket without holding memory, and what it knows of the socket between two receives.
//
// An idle source arms an io_uring POLL_ADD for POLLIN (arm()) instead of a receive, so an idle
// connection holds no chunk and no record buffer. When the wait completes, the source receives
// next: the socket's error, if that is what woke it, shows in that receive. After a receive, the
// source is still readable when the receive filled everything it asked for (more is likely queued:
// read again directly, without a wait).
#pragma once

#include <poll.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <variant>

#include "proxy/conn/relay.hpp"
#include "proxy/conn/relay_core/direction.hpp"
#include "proxy/io/lease.hpp"

namespace ztp::conn::core {

class ReadinessWait {
public:
    ReadinessWait(RelayHost& host, int fd, uint8_t tag) : host_(host), fd_(fd), wait_(&host.completion_target(), tag) {}

    bool pending() const { return wait_.pending(); }
    // A receive now is likely to find bytes (or the socket's error).
    bool readable() const { return readable_; }
    // A receive of `asked` bytes got `got`.
    void received(size_t got, size_t asked) { readable_ = got == asked; }

    // Waits until the socket is readable, holding nothing.
    void arm() {
        host_.op_submitted();
        host_.loop().poll(wait_.start(), fd_, POLLIN);
    }

    // False when `tag` is not this wait's. Else the wait is over: the source reads next, and `dir`
    // is kicked unless it failed or the wait was cancelled (the connection is closing).
    bool on_completion(uint8_t tag, int res, Direction& dir) {
        if (tag != wait_.tag()) return false;
        wait_.finish();
        readable_ = true;  // or an error, which the receive reports
        if (!dir.failed() && res != -ECANCELED) dir.kick();
        return true;
    }

private:
    RelayHost& host_;
    int fd_;
    io::InFlight<std::monostate> wait_;
    bool readable_ = false;
};

}  // namespace ztp::conn::core
