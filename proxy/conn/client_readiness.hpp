// ClientReadiness: for relays whose record path does its own socket I/O (OpenSSL, the kernel
// path's recvmsg/send), the client socket is driven by readiness. A record path may need the
// other direction first (OpenSSL answering a KeyUpdate while reading, or renegotiation-era
// WANT_READ from a write): then the waiting side is resumed when that readiness arrives.
#pragma once

#include <poll.h>

#include <string>
#include <utility>

#include "crypto/record_path.hpp"
#include "proxy/conn/relay.hpp"

namespace ztp::conn {

class ClientReadiness {
public:
    ClientReadiness(RelayHost& host, int fd, uint8_t in_tag, uint8_t out_tag)
        : host_(host), fd_(fd), in_{&host.completion_target(), in_tag}, out_{&host.completion_target(), out_tag} {}

    void want_read() { arm(in_, in_armed_, POLLIN); }
    void want_write() { arm(out_, out_armed_, POLLOUT); }
    void reader_needs_write() {
        reader_waits_for_write_ = true;
        want_write();
    }
    void writer_needs_read() {
        writer_waits_for_read_ = true;
        want_read();
    }

    // close_notify through `path` once the direction towards the client is drained: true when it
    // is out; false while waiting for readiness (armed here) or after `fail(result)` was called.
    template <typename Fail>
    bool send_close_notify(crypto::RecordPath& path, Fail&& fail) {
        auto r = path.shutdown_write();
        if (r.status == crypto::IoStatus::want_write) return want_write(), false;
        if (r.status == crypto::IoStatus::want_read) return writer_needs_read(), false;
        if (r.status != crypto::IoStatus::ok) return fail(r), false;
        return true;
    }

    // Dispatches a completion: false when `tag` is not ours. `read()` / `write()` pump the
    // directions; nothing is pumped once the relay failed.
    template <typename Read, typename Write>
    bool on_completion(uint8_t tag, bool failed, Read&& read, Write&& write) {
        if (tag == in_.tag) {
            in_armed_ = false;
            if (failed) return true;
            read();
            if (std::exchange(writer_waits_for_read_, false)) write();
            return true;
        }
        if (tag == out_.tag) {
            out_armed_ = false;
            if (failed) return true;
            write();
            if (std::exchange(reader_waits_for_write_, false)) read();
            return true;
        }
        return false;
    }

private:
    void arm(io::Op& op, bool& armed, unsigned events) {
        if (armed) return;
        armed = true;
        host_.op_submitted();
        host_.loop().poll(&op, fd_, events);
    }

    RelayHost& host_;
    int fd_;
    io::Op in_, out_;
    bool in_armed_ = false, out_armed_ = false;
    bool reader_waits_for_write_ = false, writer_waits_for_read_ = false;
};

// The access-log close reason for a failed client-side record path operation.
inline const char* client_close_reason(const crypto::IoResult& r) {
    if (r.close_reason) return r.close_reason;
    if (r.status == crypto::IoStatus::peer_alert) return "client_alert";
    if (r.status == crypto::IoStatus::bad_record) return "bad_record";
    return (r.sys_errno == ECONNRESET || r.sys_errno == EPIPE) ? "client_reset" : "client_error";
}

}  // namespace ztp::conn
