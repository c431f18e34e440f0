#include "proxy/conn/relay_core/ends.hpp"

#include <limits.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "proxy/conn/client_records.hpp"

namespace ztp::conn::core {

// ---------------------------------------------------------------------------- backend socket

void BackendSource::pump() {
    if (recv_.pending() || ready_.pending() || !dir_.reading()) return;
    if (!ready_.readable() && !dir_.queued()) {
        dir_.idle();  // wait without holding a chunk
        return ready_.arm();
    }
    auto room = dir_.room();
    if (room.empty()) return;  // at a cap: the sink's progress pumps again
    Recv& r = recv_.body();
    r.chunk = dir_.room_lease();  // the receive holds its chunk until it completes
    r.len = room.size();
    host_.op_submitted();
    host_.loop().recv(recv_.start(), fd_, room.data(), room.size());
}

bool BackendSource::on_completion(uint8_t tag, int res) {
    if (tag != recv_.tag()) return ready_.on_completion(tag, res, dir_);
    // The receive's lease on its chunk ends here, before the kick: what it wrote is the arena's (and
    // the plan's) now, and at a cap of one chunk the next read needs the old one gone.
    const size_t asked = recv_.finish().len;
    if (dir_.failed() || res == -ECANCELED) return true;
    if (res < 0) {
        dir_.fail("backend_reset", std::string("recv from backend: ") + std::strerror(-res));
    } else if (res == 0) {
        dir_.input_ended("backend_close");
    } else {
        ready_.received(static_cast<size_t>(res), asked);
        dir_.received(static_cast<size_t>(res));
        dir_.end_pass(!ready_.readable());
    }
    dir_.kick();
    return true;
}

void BackendSink::pump() {
    if (send_.pending() || dir_.failed()) return;
    Send& s = send_.body();
    dir_.take(s.plan);
    if (!s.plan.empty()) return submit(send_.start());
    if (dir_.finishing() && !dir_.done() && !dir_.refused()) {
        // The client's close_notify (or FIN) becomes a FIN towards the backend; the other
        // direction keeps flowing until the backend finishes too.
        ::shutdown(fd_, SHUT_WR);
        dir_.finished();
    }
}

void BackendSink::submit(io::Op* op) {
    Send& s = send_.completing();
    auto iov = s.plan.iovecs();
    s.msg = {};
    s.msg.msg_iov = const_cast<iovec*>(iov.data());
    s.msg.msg_iovlen = std::min<size_t>(iov.size(), IOV_MAX);
    host_.op_submitted();
    host_.loop().sendmsg(op, fd_, &s.msg);
}

bool BackendSink::on_completion(uint8_t tag, int res) {
    if (tag != send_.tag()) return false;
    if (res >= 0 && !dir_.failed()) {
        Send& s = send_.completing();
        s.plan.consume(static_cast<size_t>(res));
        dir_.sent(static_cast<size_t>(res));
        if (!s.plan.empty()) {  // short send: the rest, in order, from the same record
            submit(send_.again());
            dir_.kick();
            return true;
        }
    }
    send_.finish();  // the chunks the plan referenced may go now
    if (dir_.failed() || res == -ECANCELED) return true;
    if (res < 0) {
        dir_.fail("backend_reset", std::string("send to backend: ") + std::strerror(-res));
        return true;
    }
    dir_.kick();
    return true;
}

// ---------------------------------------------------------------------------- client record path

void PathSource::pump() {
    if (waiting_) return;  // nothing new since the last want_read: the readiness pumps again
    bool drained = false;  // the client has nothing more for now: held-back bytes wait for a pause
    while (dir_.reading()) {
        // Into the current chunk's tail: the plan and the held-back bytes point into what is before.
        auto room = dir_.room();
        if (room.empty()) break;  // at a cap: resumes when the backend took some
        auto r = path_.read(std::as_writable_bytes(room));
        note_key_updates(path_, key_updates_seen_);
        switch (r.status) {
            case crypto::IoStatus::ok:
                if (path_.copies_plaintext()) dir_.counters().copied_up += r.bytes;
                dir_.received(r.bytes);
                continue;
            case crypto::IoStatus::want_read:
                io_.want_read();
                waiting_ = true;
                drained = true;
                break;
            case crypto::IoStatus::want_write: io_.reader_needs_write(); break;
            case crypto::IoStatus::eof:
            case crypto::IoStatus::eof_unclean: return dir_.input_ended("client_close");
            default: return dir_.fail(client_close_reason(r), r.reason);
        }
        break;
    }
    dir_.end_pass(drained);
    if (drained) dir_.idle();
}

void PathSink::pump() {
    while (!dir_.failed()) {
        if (writing_.empty()) dir_.take(writing_);
        if (writing_.empty()) break;
        const iovec& v = writing_.iovecs().front();
        auto r = path_.write({static_cast<const std::byte*>(v.iov_base), v.iov_len});
        switch (r.status) {
            case crypto::IoStatus::ok:
                writing_.consume(r.bytes);
                if (path_.copies_plaintext()) dir_.counters().copied_down += r.bytes;
                dir_.sent(r.bytes);
                continue;
            case crypto::IoStatus::want_write: return io_.want_write();
            case crypto::IoStatus::want_read: return io_.writer_needs_read();
            default: return dir_.fail(client_close_reason(r), r.reason);
        }
    }
    if (dir_.failed() || !dir_.finishing() || dir_.done()) return;
    // close_notify is the last item: only behind every byte the backend sent.
    if (io_.send_close_notify(path_, [this](const crypto::IoResult& r) { dir_.fail(client_close_reason(r), r.reason); }))
        dir_.finished();
}

}  // namespace ztp::conn::core
