#include "proxy/conn/splice_relay.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "proxy/conn/client_readiness.hpp"
#include "proxy/conn/client_records.hpp"

namespace ztp::conn {

SpliceRelay::SpliceRelay(RelayHost& host, io::PipePool& pipes, std::unique_ptr<crypto::KernelRecordPath> path,
                         int client_fd, int backend_fd)
    : host_(host),
      pool_(pipes),
      path_(std::move(path)),
      up_{true, client_fd, backend_fd, {}, 0, false, false, false, false,
          {&host.completion_target(), kUpFill}, {&host.completion_target(), kUpDrain},
          {&host.completion_target(), kUpDrainPoll}},
      down_{false, backend_fd, client_fd, {}, 0, false, false, false, false,
            {&host.completion_target(), kDownFill}, {&host.completion_target(), kDownDrain},
            {&host.completion_target(), kDownDrainPoll}},
      op_goodbye_poll_{&host.completion_target(), kGoodbyePoll},
      op_control_poll_{&host.completion_target(), kUpControlPoll} {}

SpliceRelay::~SpliceRelay() {
    // Only empty pipes go back to the pool; one still holding plaintext is closed (PipePool).
    if (up_.pipe.read_end) pool_.give_back(std::move(up_.pipe), up_.in_pipe);
    if (down_.pipe.read_end) pool_.give_back(std::move(down_.pipe), down_.in_pipe);
}

void SpliceRelay::start() {
    // The backend socket was blocking for io_uring's connect; splice needs EAGAIN from it.
    ::fcntl(up_.dst, F_SETFL, ::fcntl(up_.dst, F_GETFL) | O_NONBLOCK);
    for (Direction* d : {&up_, &down_}) {
        auto p = pool_.take();
        if (!p) return fail("internal_error", "no pipe for splice: " + p.error().message());
        d->pipe = std::move(p).value();
    }
    fill(up_);
    fill(down_);
}

void SpliceRelay::on_completion(uint8_t tag, int res) {
    switch (tag) {
        case kUpFill: up_.fill_inflight = false; return on_fill(up_, res);
        case kDownFill: down_.fill_inflight = false; return on_fill(down_, res);
        case kUpDrain: up_.drain_inflight = false; return on_drain(up_, res);
        case kDownDrain: down_.drain_inflight = false; return on_drain(down_, res);
        case kUpDrainPoll: up_.drain_inflight = false; return drain(up_);
        case kDownDrainPoll: down_.drain_inflight = false; return drain(down_);
        case kGoodbyePoll: down_.drain_inflight = false; return finish(down_);
        case kUpControlPoll:
            up_.fill_inflight = false;
            if (failed_ || res == -ECANCELED) return;
            if (res < 0) return fail("client_error", std::string("poll: ") + std::strerror(-res));
            return on_control_record(up_);
    }
}

// Every size is spliced; small messages never take a recv/send shortcut. Measured in the kTLS
// kernel (tests/bench/ktls_splice_bench.cpp, README "Small transfers on the kernel path"): through
// io_uring a splice costs 15-40 % more CPU per message than recvmsg + send at every size, because
// IORING_OP_SPLICE always runs in an io-wq worker, while splice(2) itself costs the same as
// recv + send up to one record. There is no threshold to switch at, and a shortcut would move the
// plaintext through user space, which is what this relay exists to avoid (copied_* = 0).
void SpliceRelay::fill(Direction& d) {
    if (failed_ || d.src_eof || d.fill_inflight || d.in_pipe >= d.pipe.capacity) return;
    // Bytes that came up through user space go into the pipe before anything spliced behind them.
    if (d.up && !spill_.empty() && !push_spill(d)) return;
    d.fill_inflight = true;
    host_.op_submitted();
    host_.loop().poll_then_splice(&d.op_fill, d.src, d.pipe.write_end.get(), d.pipe.capacity - d.in_pipe);
}

bool SpliceRelay::push_spill(Direction& d) {
    auto n = spill_.write_to(d.pipe.write_end.get());
    if (!n) {
        fail("internal_error", "spilled record into the pipe: " + n.error().message());
        return false;
    }
    d.in_pipe += *n;
    // The rest waits for room: the drain's completion calls fill() again.
    drain(d);
    return spill_.empty();
}

void SpliceRelay::on_fill(Direction& d, int res) {
    if (failed_ || res == -ECANCELED) return;
    if (res > 0) {
        if (d.up) path_->application_data_arrived();
        d.in_pipe += static_cast<size_t>(res);
        spliced(d) += static_cast<uint64_t>(res);
        bytes(d) += static_cast<uint64_t>(res);
        host_.activity();
        drain(d);
        return fill(d);
    }
    if (res == 0 && d.up && path_->classify_zero_read() == crypto::KernelRecordPath::ZeroRead::empty_record) {
        // An empty application_data record, not the end of the stream (unless there are too many).
        auto skipped = path_->skip_empty_record();
        if (skipped.status != crypto::IoStatus::want_read) return fail(client_close_reason(skipped), skipped.reason);
        return fill(d);
    }
    if (res == 0) {  // FIN (for the client: without close_notify)
        d.src_eof = true;
        if (!first_close_) first_close_ = d.up ? "client_close" : "backend_close";
        return drain(d);
    }
    if (res == -EAGAIN) {
        // A pipe is full by slots (one per segment, 16 by default), not by bytes: small segments fill
        // it long before in_pipe reaches its capacity. With bytes in the pipe, the reader parks: the
        // drain's next progress calls fill() again, and nothing is resubmitted before it. With an
        // empty pipe the source's readiness was spurious: fill() waits for it again.
        if (d.in_pipe > 0) return drain(d);
        return fill(d);
    }
    // kTLS contract: EINVAL means the next record is not application data. It is still queued;
    // read it with a cmsg buffer. EKEYEXPIRED (Linux >= 6.14): decryption waits behind a KeyUpdate
    // for its key; the KeyUpdate record is still there to be read the same way, which installs it.
    if ((res == -EINVAL || res == -EKEYEXPIRED) && d.up) return on_control_record(d);
    if (res == -EBADMSG) return bad_record("record failed authentication");
    if (res == -EMSGSIZE) {
        path_->fail_with_alert(crypto::RecordError::plaintext_overflow);  // record_overflow, then FIN
        return fail("record_overflow", "client record longer than TLS allows");
    }
    fail(d.up ? "client_error" : "backend_reset", std::string("splice in: ") + std::strerror(-res));
}

void SpliceRelay::on_control_record(Direction& d) {
    std::string spill;
    auto r = path_->read_control(spill);
    note_key_updates(*path_, key_updates_seen_);
    switch (r.status) {
        case crypto::IoStatus::eof:  // close_notify: the client is done sending
        case crypto::IoStatus::eof_unclean:
            d.src_eof = true;
            if (!first_close_) first_close_ = "client_close";
            return drain(d);
        case crypto::IoStatus::want_read:
            // Skipped (NewSessionTicket) or a KeyUpdate followed; ours, if the client asked for
            // it, goes out now unless a write towards the client is in flight (then right after).
            if (path_->key_update_owed()) drain(down_);
            // A handshake message split across records: its next record is read (and checked) here
            // too. A splice would move application data sent in between past the parser, which
            // RFC 8446 §5.1 says must be refused (unexpected_message).
            if (path_->control_pending()) return wait_control_record(d);
            return fill(d);
        case crypto::IoStatus::ok:
            // Application data after all: it passed through user space, so it is counted as
            // copied, and it goes into the pipe (as much as fits now) ahead of the next splice.
            counters_.copied_up += spill.size();
            bytes(d) += spill.size();
            host_.activity();
            spill_.hold(std::move(spill));
            return fill(d);
        default: return fail(client_close_reason(r), r.reason);
    }
}

void SpliceRelay::wait_control_record(Direction& d) {
    d.fill_inflight = true;  // no splice from the client meanwhile
    host_.op_submitted();
    host_.loop().poll(&op_control_poll_, d.src, POLLIN);
}

void SpliceRelay::drain(Direction& d) {
    if (failed_ || d.drain_inflight) return;
    // RFC 8446 §4.6.3: the KeyUpdate the client asked for precedes our next application data.
    // Sent here, between two drains, because no splice into the client socket is then in flight
    // to be encrypted between our KeyUpdate record and the switch to the next key.
    if (!d.up && !d.done && path_->key_update_owed()) {
        auto k = path_->send_owed_key_update();
        if (k.status == crypto::IoStatus::want_write) return wait_writable(d);
        if (k.status != crypto::IoStatus::ok) return fail(client_close_reason(k), k.reason);
    }
    if (d.in_pipe == 0) {
        if (d.src_eof && !d.done) finish(d);
        return;
    }
    d.drain_inflight = true;
    host_.op_submitted();
    host_.loop().splice(&d.op_drain, d.pipe.read_end.get(), d.dst, d.in_pipe);
}

void SpliceRelay::on_drain(Direction& d, int res) {
    if (failed_ || res == -ECANCELED) return;
    if (res > 0) {
        d.in_pipe -= static_cast<size_t>(res);
        host_.activity();
        fill(d);
        return drain(d);
    }
    if (res == -EAGAIN || res == 0) return wait_writable(d);  // the destination's send buffer is full
    fail(d.up ? "backend_reset" : "client_reset", std::string("splice out: ") + std::strerror(-res));
}

void SpliceRelay::wait_writable(Direction& d) {
    d.drain_inflight = true;
    host_.op_submitted();
    host_.loop().poll(&d.op_drain_poll, d.dst, POLLOUT);
}

void SpliceRelay::finish(Direction& d) {
    if (failed_ || d.done) return;
    if (d.up) {
        // The client's close_notify (or FIN) becomes a FIN towards the backend.
        ::shutdown(d.dst, SHUT_WR);
    } else {
        auto r = path_->shutdown_write();  // close_notify, encrypted by the kernel
        if (r.status == crypto::IoStatus::want_write) {
            // Counts as the direction's write in flight: nothing else may start on it meanwhile.
            d.drain_inflight = true;
            host_.op_submitted();
            host_.loop().poll(&op_goodbye_poll_, d.dst, POLLOUT);
            return;
        }
        if (r.status != crypto::IoStatus::ok) return fail("client_reset", r.reason);
    }
    d.done = true;
    if (up_.done && down_.done) host_.relay_finished(first_close_ ? first_close_ : "client_close");
}

void SpliceRelay::bad_record(const std::string& detail) {
    // Nothing of the record was released (splice moved no byte of it). The client gets
    // bad_record_mac through kTLS TX, then our FIN (fail_with_alert clears the pending EBADMSG).
    path_->fail_with_alert(crypto::RecordError::bad_record_mac);
    fail("bad_record", detail);
}

void SpliceRelay::fail(const char* reason, const std::string& detail) {
    if (failed_) return;
    failed_ = true;
    note_relay_close(reason);
    host_.relay_failed(reason, detail);
}

void SpliceRelay::say_goodbye() {
    if (down_.done || failed_) return;
    // close_notify only behind the last byte: plaintext still in the pipe means the client must see
    // the truncation. (What the socket already took goes out ahead of the close_notify anyway.)
    if (down_.in_pipe > 0) return note_truncated_close();
    path_->shutdown_write();
}

void SpliceRelay::cancel_own_io() {
    // Fill splices target the pipes' write ends; drains and polls target the sockets, which the
    // connection cancels.
    for (Direction* d : {&up_, &down_})
        if (d->pipe.write_end) host_.loop().cancel_fd(d->pipe.write_end.get());
}

}  // namespace ztp::conn
