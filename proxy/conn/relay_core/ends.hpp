// Source and Sink adapters of the relay core (direction.hpp), one per medium:
//   BackendSource   backend socket → chunks: io_uring RECV into the direction's room, the chunk's
//                   lease in the receive's op record; a readiness POLL first when the direction
//                   has nothing queued, so an idle connection holds no chunk.
//   BackendSink     plan → backend socket: io_uring SENDMSG of the plan's iovecs, the plan (and so
//                   every chunk it references) in the send's op record until the last byte left;
//                   the end of the stream is shutdown(SHUT_WR).
//   PathSource      client record path (OpenSSL, or the kernel's recvmsg) → chunks, driven by
//                   readiness (ClientReadiness): the path does its own socket I/O.
//   PathSink        plan → client record path writes; the end of the stream is close_notify.
// The userspace record layer's ends are in gated_source.hpp (client records → gated slots) and
// sealing.hpp (plan → sealed records; backend → record slots).
#pragma once

#include <sys/socket.h>

#include <memory>

#include "crypto/record_path.hpp"
#include "proxy/conn/client_readiness.hpp"
#include "proxy/conn/relay_core/direction.hpp"
#include "proxy/conn/relay_core/readiness_wait.hpp"
#include "proxy/io/lease.hpp"

namespace ztp::conn::core {

class BackendSource final : public Source {
public:
    BackendSource(RelayHost& host, Direction& dir, int fd, uint8_t recv_tag, uint8_t poll_tag)
        : host_(host), dir_(dir), fd_(fd), recv_(&host.completion_target(), recv_tag), ready_(host, fd, poll_tag) {}
    void pump() override;
    // False when `tag` is not one of its ops.
    bool on_completion(uint8_t tag, int res);

private:
    struct Recv {
        std::shared_ptr<const void> chunk;  // the chunk the kernel writes into
        size_t len = 0;                     // bytes asked for
    };
    RelayHost& host_;
    Direction& dir_;
    int fd_;
    io::InFlight<Recv> recv_;
    ReadinessWait ready_;
};

class BackendSink final : public Sink {
public:
    BackendSink(RelayHost& host, Direction& dir, int fd, uint8_t send_tag)
        : host_(host), dir_(dir), fd_(fd), send_(&host.completion_target(), send_tag) {}
    void pump() override;
    size_t held_segments() const override { return send_.pending() ? send_.held().plan.iovecs().size() : 0; }
    bool holds_bytes() const override { return send_.pending(); }
    bool on_completion(uint8_t tag, int res);

private:
    struct Send {
        redact::RewritePlan plan;  // references every chunk the send reads
        msghdr msg{};
    };
    void submit(io::Op* op);
    RelayHost& host_;
    Direction& dir_;
    int fd_;
    io::InFlight<Send> send_;
};

class PathSource final : public Source {
public:
    PathSource(Direction& dir, crypto::RecordPath& path, ClientReadiness& io) : dir_(dir), path_(path), io_(io) {}
    void pump() override;
    // The client's socket became readable (ClientReadiness): the path may have bytes again.
    void readable() { waiting_ = false; }

private:
    Direction& dir_;
    crypto::RecordPath& path_;
    ClientReadiness& io_;
    uint64_t key_updates_seen_ = 0;
    // The path said want_read and no readiness came since. A kick from the other side (the backend
    // took bytes) would only find nothing: one more SSL_read / recvmsg returning EAGAIN per request.
    // (want_read means the path holds no whole record: only new bytes on the socket can help.)
    bool waiting_ = false;
};

class PathSink final : public Sink {
public:
    PathSink(Direction& dir, crypto::RecordPath& path, ClientReadiness& io) : dir_(dir), path_(path), io_(io) {}
    void pump() override;
    size_t held_segments() const override { return writing_.iovecs().size(); }
    bool holds_bytes() const override { return !writing_.empty(); }
    void goodbye() override { path_.shutdown_write(); }

private:
    Direction& dir_;
    crypto::RecordPath& path_;
    ClientReadiness& io_;
    redact::RewritePlan writing_;  // taken from the direction, partly written
};

}  // namespace ztp::conn::core
