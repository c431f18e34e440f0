#include "proxy/conn/relay_core/pipe_direction.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "proxy/conn/client_readiness.hpp"
#include "proxy/conn/client_records.hpp"

namespace ztp::conn::core {
namespace {

// Steps (a splice, a control record) one kick takes before it yields to the other connections of
// the worker: it then waits for readiness that is already there, which io_uring reports in the
// next loop turn. A kTLS splice moves at most one record, so this is up to ~512 KiB per turn.
constexpr int kMaxStepsPerKick = 32;

}  // namespace

PipeDirection::PipeDirection(RelayHost& host, Ending& ending, RelayCounters& counters, crypto::KernelRecordPath& path,
                             io::PipePool& pool, bool up, int src, int dst, uint8_t readable_tag, uint8_t writable_tag)
    : host_(host),
      ending_(ending),
      counters_(counters),
      path_(path),
      pool_(pool),
      up_(up),
      src_(src),
      dst_(dst),
      readable_(&host.completion_target(), readable_tag),
      writable_(&host.completion_target(), writable_tag) {}

PipeDirection::~PipeDirection() {
    if (pipe_.read_end) pool_.give_back(std::move(pipe_), in_pipe_);
}

bool PipeDirection::open() {
    auto p = pool_.take();
    if (!p) {
        ending_.fail("internal_error", "no pipe for splice: " + p.error().message());
        return false;
    }
    pipe_ = std::move(p).value();
    return true;
}

void PipeDirection::kick() {
    for (int steps = 0; !ending_.failed(); ++steps) {
        if (steps == kMaxStepsPerKick) {
            // More may be there: wait for readiness that fires at once, after the others' turn. The
            // drain goes on (or ends the direction) when the destination is writable.
            if (in_pipe_ > 0 || input_ended_) wait_writable();
            else wait_readable();
            return;
        }
        const bool filled = fill() == Step::moved;
        const bool drained = drain() == Step::moved;
        if (!filled && !drained) return;
    }
}

bool PipeDirection::on_completion(uint8_t tag, int res) {
    const bool readable = tag == readable_.tag();
    if (readable) readable_.finish();
    else if (tag == writable_.tag()) writable_.finish();
    else return false;
    if (ending_.failed() || res == -ECANCELED) return true;
    if (res < 0) {
        const bool client = up_ == readable;  // the up direction reads the client, the down one writes it
        ending_.fail(client ? "client_error" : "backend_reset", std::string("poll: ") + std::strerror(-res));
        return true;
    }
    kick();
    return true;
}

PipeDirection::Step PipeDirection::fill() {
    if (input_ended_ || readable_.pending()) return Step::blocked;
    // Bytes that came up through user space go into the pipe before anything spliced behind them.
    if (!spill_.empty()) return push_spill();
    if (in_pipe_ >= pipe_.capacity) return Step::blocked;  // the drain's progress brings us back
    // A handshake message split across records: its next record is read (and checked) as a control
    // record too. A splice would move application data sent in between past the parser, which
    // RFC 8446 §5.1 says must be refused (unexpected_message).
    if (up_ && path_.control_pending()) return fill_from_control_record();
    const long n = host_.loop().splice_now(src_, pipe_.write_end.get(), pipe_.capacity - in_pipe_);
    if (n > 0) {
        if (up_) path_.application_data_arrived();
        in_pipe_ += static_cast<size_t>(n);
        bytes() += static_cast<uint64_t>(n);
        (up_ ? counters_.spliced_up : counters_.spliced_down) += static_cast<uint64_t>(n);
        host_.activity();
        return Step::moved;
    }
    if (n == 0) return on_source_zero();
    if (n == -EAGAIN) {
        // A pipe is full by slots (one per segment, 16 by default), not by bytes: small segments
        // fill it long before in_pipe_ reaches its capacity, and EAGAIN then comes from the pipe.
        // With bytes in the pipe the reader parks behind the drain, whose progress brings it back
        // (nothing is retried without progress); with an empty pipe the source has nothing yet.
        if (in_pipe_ == 0) wait_readable();
        return Step::blocked;
    }
    return source_error(n);
}

PipeDirection::Step PipeDirection::push_spill() {
    auto n = spill_.write_to(pipe_.write_end.get());
    if (!n) {
        ending_.fail("internal_error", "spilled record into the pipe: " + n.error().message());
        return Step::blocked;
    }
    in_pipe_ += *n;
    return *n > 0 ? Step::moved : Step::blocked;  // 0: the pipe is full, the drain comes first
}

PipeDirection::Step PipeDirection::on_source_zero() {
    if (up_ && path_.classify_zero_read() == crypto::KernelRecordPath::ZeroRead::empty_record) {
        // An empty application_data record, not the end of the stream (unless there are too many).
        auto skipped = path_.skip_empty_record();
        if (skipped.status != crypto::IoStatus::want_read) {
            ending_.fail(client_close_reason(skipped), skipped.reason);
            return Step::blocked;
        }
        return Step::moved;
    }
    // The FIN (from the client: without close_notify). The drain finishes once the pipe is empty.
    input_ended_ = true;
    ending_.source_ended(up_ ? "client_close" : "backend_close");
    return Step::moved;
}

PipeDirection::Step PipeDirection::source_error(long err) {
    if (up_) {
        // kTLS contract: EINVAL means the next record is not application data. It is still queued;
        // read it with a cmsg buffer. EKEYEXPIRED (Linux >= 6.14): decryption waits behind a
        // KeyUpdate for its key; the KeyUpdate record is still there to be read the same way,
        // which installs it.
        if (err == -EINVAL || err == -EKEYEXPIRED) return fill_from_control_record();
        if (err == -EBADMSG) {
            // Nothing of the record was released (splice moved no byte of it). The client gets
            // bad_record_mac through kTLS TX, then our FIN (fail_with_alert clears the pending
            // EBADMSG).
            path_.fail_with_alert(crypto::RecordError::bad_record_mac);
            ending_.fail("bad_record", "record failed authentication");
            return Step::blocked;
        }
        if (err == -EMSGSIZE) {
            path_.fail_with_alert(crypto::RecordError::plaintext_overflow);  // record_overflow, then FIN
            ending_.fail("record_overflow", "client record longer than TLS allows");
            return Step::blocked;
        }
    }
    ending_.fail(up_ ? "client_error" : "backend_reset",
                 std::string("splice in: ") + std::strerror(static_cast<int>(-err)));
    return Step::blocked;
}

PipeDirection::Step PipeDirection::fill_from_control_record() {
    std::string spill;
    auto r = path_.read_control(spill);
    note_key_updates(path_, key_updates_seen_);
    switch (r.status) {
        case crypto::IoStatus::eof:  // close_notify: the client is done sending
        case crypto::IoStatus::eof_unclean:
            input_ended_ = true;
            ending_.source_ended("client_close");
            return Step::moved;
        case crypto::IoStatus::want_read:
            // Skipped (NewSessionTicket), or a KeyUpdate followed: ours, if the client asked for
            // it, goes out before the next splice towards the client.
            if (path_.key_update_owed() && reverse_) reverse_->kick();
            if (path_.control_pending()) {
                wait_readable();  // the rest of the message is not there yet
                return Step::blocked;
            }
            return Step::moved;
        case crypto::IoStatus::ok:
            // Application data after all: it passed through user space, so it is counted as
            // copied, and it goes into the pipe ahead of the next splice.
            counters_.copied_up += spill.size();
            bytes() += spill.size();
            host_.activity();
            spill_.hold(std::move(spill));
            return Step::moved;
        default:
            ending_.fail(client_close_reason(r), r.reason);
            return Step::blocked;
    }
}

PipeDirection::Step PipeDirection::drain() {
    if (done_ || writable_.pending()) return Step::blocked;
    if (!up_ && path_.key_update_owed()) {
        // RFC 8446 §4.6.3: the KeyUpdate the client asked for precedes our next application data.
        // Splices are synchronous, so none is in flight to be encrypted between our KeyUpdate
        // record and the switch to the next key.
        auto k = path_.send_owed_key_update();
        if (k.status == crypto::IoStatus::want_write) {
            wait_writable();
            return Step::blocked;
        }
        if (k.status != crypto::IoStatus::ok) {
            ending_.fail(client_close_reason(k), k.reason);
            return Step::blocked;
        }
    }
    if (in_pipe_ == 0) return input_ended_ && spill_.empty() ? finish() : Step::blocked;
    const long n = host_.loop().splice_now(pipe_.read_end.get(), dst_, in_pipe_);
    if (n > 0) {
        in_pipe_ -= static_cast<size_t>(n);
        host_.activity();
        return Step::moved;
    }
    if (n == -EAGAIN || n == 0) {  // the destination's send buffer is full
        wait_writable();
        return Step::blocked;
    }
    ending_.fail(up_ ? "backend_reset" : "client_reset",
                 std::string("splice out: ") + std::strerror(static_cast<int>(-n)));
    return Step::blocked;
}

PipeDirection::Step PipeDirection::finish() {
    if (up_) {
        // The client's close_notify (or FIN) becomes a FIN towards the backend.
        ::shutdown(dst_, SHUT_WR);
    } else {
        // close_notify, encrypted by the kernel, strictly after the last byte left the pipe.
        auto r = path_.shutdown_write();
        if (r.status == crypto::IoStatus::want_write) {
            wait_writable();
            return Step::blocked;
        }
        if (r.status != crypto::IoStatus::ok) {
            ending_.fail("client_reset", r.reason);
            return Step::blocked;
        }
    }
    done_ = true;
    ending_.direction_done();
    return Step::blocked;
}

void PipeDirection::wait_readable() {
    if (readable_.pending()) return;
    host_.op_submitted();
    host_.loop().poll(readable_.start(), src_, POLLIN);
}

void PipeDirection::wait_writable() {
    if (writable_.pending()) return;
    host_.op_submitted();
    host_.loop().poll(writable_.start(), dst_, POLLOUT);
}

}  // namespace ztp::conn::core
