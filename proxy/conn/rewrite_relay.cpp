#include "proxy/conn/rewrite_relay.hpp"

#include <limits.h>
#include <poll.h>

#include <algorithm>
#include <cstring>

#include "crypto/record_layer.hpp"
#include "proxy/conn/client_records.hpp"

namespace ztp::conn {

RewriteRelay::RewriteRelay(RelayHost& host, std::unique_ptr<crypto::RecordPath> path, int client_fd, int backend_fd,
                           size_t chunk_size, RedactionStage up, RedactionStage down)
    : host_(host),
      path_(std::move(path)),
      client_(client_fd),
      backend_(backend_fd),
      up_stage_(std::move(up)),
      down_stage_(std::move(down)),
      client_io_(host, client_fd, kClientIn, kClientOut),
      op_recv_{&host.completion_target(), kBackendRecv},
      op_send_{&host.completion_target(), kBackendSend},
      up_quiet_(io::Op{&host.completion_target(), kUpQuiet}),
      down_quiet_(io::Op{&host.completion_target(), kDownQuiet}),
      // A fresh chunk once the tail has less room than a whole record (or a quarter chunk).
      up_chunks_(chunk_size, std::min(crypto::kRecordMaxPlaintext, chunk_size / 4), kMaxChunks),
      down_chunks_(chunk_size, std::min(crypto::kRecordMaxPlaintext, chunk_size / 4), kMaxChunks) {}

void RewriteRelay::start() {
    pump_client_read();
    pump_backend_recv();
}

void RewriteRelay::on_completion(uint8_t tag, int res) {
    if (client_io_.on_completion(tag, failed_, [this] { pump_client_read(); }, [this] { pump_client_write(); }))
        return;
    switch (tag) {
        case kBackendRecv:
            recv_inflight_ = false;
            down_recv_lease_.reset();
            return on_backend_recv(res);
        case kBackendSend: send_inflight_ = false; return on_backend_send(res);
        case kUpQuiet: return on_quiet(true);
        case kDownQuiet: return on_quiet(false);
    }
}

// ---------------------------------------------------------------------------- client → backend

void RewriteRelay::pump_client_read() {
    // Reads of one pass that land back to back in a chunk go to the stage as one span: a plan
    // segment per read would cost more than the byte a 1-byte record carries.
    std::shared_ptr<const void> owner;
    std::span<const uint8_t> unfed;
    bool drained = false;  // the client has nothing more for now: held-back bytes wait for a pause
    auto feed = [&] {
        if (unfed.empty()) return true;
        ++up_feeds_;
        auto f = up_stage_.feed(redact::SharedBytes::adopt(std::move(owner), unfed), up_filling_);
        unfed = {};
        if (!f) fail("internal_error", "redaction: " + f.error().message());
        return static_cast<bool>(f);
    };
    while (!failed_ && !up_eof_ && segments(up_filling_) + segments(up_sending_) < kMaxSegments) {
        // Into the current chunk's tail: the plan and the held-back bytes point into what is before.
        auto space = up_chunks_.space();
        if (space.empty()) break;  // at its chunk cap: resumes when the backend took some
        auto r = path_->read(std::as_writable_bytes(space));
        note_key_updates(*path_, key_updates_seen_);
        switch (r.status) {
            case crypto::IoStatus::ok: {
                counters_.bytes_up += r.bytes;
                if (path_->copies_plaintext()) counters_.copied_up += r.bytes;
                host_.activity();
                auto [chunk, bytes] = up_chunks_.commit(r.bytes);
                if (!unfed.empty() && unfed.data() + unfed.size() == bytes.data()) {
                    unfed = {unfed.data(), unfed.size() + bytes.size()};
                    continue;
                }
                if (!feed()) return;
                owner = std::move(chunk);
                unfed = bytes;
                continue;
            }
            case crypto::IoStatus::want_read:
                client_io_.want_read();
                drained = true;
                break;
            case crypto::IoStatus::want_write: client_io_.reader_needs_write(); break;
            case crypto::IoStatus::eof:
            case crypto::IoStatus::eof_unclean:
                up_eof_ = true;
                if (!first_close_) first_close_ = "client_close";
                if (!feed()) return;
                if (auto f = up_stage_.finish(up_filling_); !f)
                    return fail("internal_error", "redaction: " + f.error().message());
                up_finished_ = true;
                break;
            default: return fail_io(r);
        }
        break;
    }
    if (!feed()) return;
    if (drained) up_quiet_.arm(host_, up_feeds_, up_stage_);
    pump_backend_send();
}

void RewriteRelay::pump_backend_send() {
    if (failed_ || send_inflight_) return;
    if (up_sending_.empty()) {
        up_sending_.clear();  // drops the chunks it referenced
        std::swap(up_sending_, up_filling_);
    }
    if (up_sending_.empty()) {
        if (up_finished_ && !up_done_) {
            // The client's close_notify (or FIN) becomes a FIN towards the backend.
            ::shutdown(backend_, SHUT_WR);
            up_done_ = true;
            maybe_finished();
        }
        return;
    }
    auto iov = up_sending_.iovecs();
    up_msg_ = {};
    up_msg_.msg_iov = const_cast<iovec*>(iov.data());
    up_msg_.msg_iovlen = std::min<size_t>(iov.size(), IOV_MAX);
    send_inflight_ = true;
    host_.op_submitted();
    host_.loop().sendmsg(&op_send_, backend_, &up_msg_);
}

void RewriteRelay::on_backend_send(int res) {
    if (failed_ || res == -ECANCELED) return;
    if (res < 0) return fail("backend_reset", std::string("send to backend: ") + std::strerror(-res));
    up_sending_.consume(static_cast<size_t>(res));
    host_.activity();
    pump_backend_send();
    pump_client_read();
}

// ---------------------------------------------------------------------------- backend → client

void RewriteRelay::pump_backend_recv() {
    if (failed_ || down_eof_ || recv_inflight_ || segments(down_filling_) + segments(down_writing_) >= kMaxSegments)
        return;
    auto space = down_chunks_.space();
    if (space.empty()) return;  // at its chunk cap: resumes when the client took some
    down_recv_lease_ = down_chunks_.lease();  // the receive holds its chunk until it completes
    recv_inflight_ = true;
    host_.op_submitted();
    host_.loop().recv(&op_recv_, backend_, space.data(), space.size());
}

void RewriteRelay::on_backend_recv(int res) {
    if (failed_ || res == -ECANCELED) return;
    if (res < 0) return fail("backend_reset", std::string("recv from backend: ") + std::strerror(-res));
    if (res == 0) {
        down_eof_ = true;
        if (!first_close_) first_close_ = "backend_close";
        if (auto f = down_stage_.finish(down_filling_); !f)
            return fail("internal_error", "redaction: " + f.error().message());
        down_finished_ = true;
    } else {
        counters_.bytes_down += static_cast<uint64_t>(res);
        ++down_feeds_;
        host_.activity();
        auto [owner, bytes] = down_chunks_.commit(static_cast<size_t>(res));
        if (auto f = down_stage_.feed(redact::SharedBytes::adopt(std::move(owner), bytes), down_filling_); !f)
            return fail("internal_error", "redaction: " + f.error().message());
        down_quiet_.arm(host_, down_feeds_, down_stage_);
    }
    pump_client_write();
    pump_backend_recv();
}

void RewriteRelay::pump_client_write() {
    while (!failed_) {
        if (down_writing_.empty()) {
            down_writing_.clear();
            std::swap(down_writing_, down_filling_);
        }
        if (down_writing_.empty()) break;
        const iovec& v = down_writing_.iovecs().front();
        auto r = path_->write({static_cast<const std::byte*>(v.iov_base), v.iov_len});
        switch (r.status) {
            case crypto::IoStatus::ok:
                down_writing_.consume(r.bytes);
                if (path_->copies_plaintext()) counters_.copied_down += r.bytes;
                host_.activity();
                continue;
            case crypto::IoStatus::want_write: return client_io_.want_write();
            case crypto::IoStatus::want_read: return client_io_.writer_needs_read();
            default: return fail_io(r);
        }
    }
    if (failed_) return;
    if (down_finished_ && !down_done_) {
        if (!client_io_.send_close_notify(*path_, [this](const crypto::IoResult& r) { fail_io(r); })) return;
        down_done_ = true;
        return maybe_finished();
    }
    pump_backend_recv();
}

// ---------------------------------------------------------------------------- held-back bytes

void RewriteRelay::on_quiet(bool up) {
    if (failed_) return;
    RedactionStage& stage = up ? up_stage_ : down_stage_;
    if (!(up ? up_quiet_ : down_quiet_).fired(host_, up ? up_feeds_ : down_feeds_, stage)) return;
    if (auto f = stage.flush(up ? up_filling_ : down_filling_); !f)
        return fail("internal_error", "redaction: " + f.error().message());
    if (up) pump_backend_send();
    else pump_client_write();
}

// ---------------------------------------------------------------------------- endings

void RewriteRelay::fail_io(const crypto::IoResult& r) {
    fail(client_close_reason(r), r.reason);
}

void RewriteRelay::fail(const char* reason, const std::string& detail) {
    if (failed_) return;
    failed_ = true;
    note_relay_close(reason);
    host_.relay_failed(reason, detail);
}

void RewriteRelay::maybe_finished() {
    if (up_done_ && down_done_) host_.relay_finished(first_close_ ? first_close_ : "client_close");
}

void RewriteRelay::say_goodbye() {
    if (down_done_ || failed_) return;
    // close_notify only behind the last byte: output or held-back bytes still queued towards the
    // client mean the client must see the truncation.
    if (!down_writing_.empty() || !down_filling_.empty() || down_stage_.held() > 0) return note_truncated_close();
    path_->shutdown_write();
}

}  // namespace ztp::conn
