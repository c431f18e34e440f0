#include "proxy/conn/buffered_relay.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "proxy/conn/client_records.hpp"

namespace ztp::conn {

BufferedRelay::BufferedRelay(RelayHost& host, std::unique_ptr<crypto::RecordPath> path, int client_fd,
                             int backend_fd, size_t buffer_size)
    : host_(host),
      path_(std::move(path)),
      client_(client_fd),
      backend_(backend_fd),
      buf_size_(std::min(buffer_size, host.buffers().buffer_size())),
      client_io_(host, client_fd, kClientIn, kClientOut),
      op_recv_{&host.completion_target(), kBackendRecv},
      op_send_{&host.completion_target(), kBackendSend},
      op_backend_readable_{&host.completion_target(), kBackendReadable} {}

void BufferedRelay::start() {
    pump_client_read();
    pump_backend_recv();
}

void BufferedRelay::on_completion(uint8_t tag, int res) {
    if (client_io_.on_completion(tag, failed_, [this] { pump_client_read(); }, [this] { pump_client_write(); }))
        return;
    switch (tag) {
        case kBackendRecv:
            recv_inflight_ = false;
            if (!failed_) on_backend_recv(res);
            break;
        case kBackendSend:
            send_inflight_ = false;
            if (!failed_) on_backend_send(res);
            break;
        case kBackendReadable:
            backend_poll_inflight_ = false;
            backend_readable_ = true;  // or an error, which the recv will report
            if (!failed_) pump_backend_recv();
            break;
    }
}

void BufferedRelay::fail(const crypto::IoResult& r) {
    failed_ = true;
    const char* reason = client_close_reason(r);
    note_relay_close(reason);
    host_.relay_failed(reason, r.reason);
}

void BufferedRelay::pump_client_read() {
    if (!up_buf_ && !failed_ && !up_eof_) up_buf_ = host_.buffers().take();
    while (!failed_ && !up_eof_ && up_len_ < buf_size_) {
        auto r = path_->read({reinterpret_cast<std::byte*>(up_buf_.data()) + up_len_, buf_size_ - up_len_});
        switch (r.status) {
            case crypto::IoStatus::ok:
                up_len_ += r.bytes;
                counters_.bytes_up += r.bytes;
                if (path_->copies_plaintext()) counters_.copied_up += r.bytes;
                host_.activity();
                continue;
            case crypto::IoStatus::want_read:
                if (up_len_ == 0 && !send_inflight_) up_buf_.reset();  // idle
                client_io_.want_read();
                break;
            case crypto::IoStatus::want_write: client_io_.reader_needs_write(); break;
            case crypto::IoStatus::eof:
            case crypto::IoStatus::eof_unclean:
                up_eof_ = true;
                if (!first_close_) first_close_ = "client_close";
                break;
            default: return fail(r);
        }
        break;
    }
    pump_backend_send();
}

void BufferedRelay::pump_backend_send() {
    if (failed_ || send_inflight_) return;
    if (up_off_ < up_len_) {
        send_inflight_ = true;
        host_.op_submitted();
        host_.loop().send(&op_send_, backend_, up_buf_.data() + up_off_, up_len_ - up_off_);
        return;
    }
    up_off_ = up_len_ = 0;
    if (up_eof_ && !up_done_) {
        // The client's close_notify (or FIN) becomes a FIN towards the backend; the other
        // direction keeps flowing until the backend finishes too.
        ::shutdown(backend_, SHUT_WR);
        up_done_ = true;
        maybe_finished();
    }
}

void BufferedRelay::on_backend_send(int res) {
    if (res < 0) {
        failed_ = true;
        return host_.relay_failed("backend_reset", std::string("send to backend: ") + std::strerror(-res));
    }
    up_off_ += static_cast<size_t>(res);
    host_.activity();
    if (up_off_ == up_len_) up_off_ = up_len_ = 0;
    pump_client_read();
}

void BufferedRelay::pump_backend_recv() {
    if (failed_ || recv_inflight_ || backend_poll_inflight_ || down_eof_) return;
    if (down_off_ == down_len_) down_off_ = down_len_ = 0;
    if (down_len_ == buf_size_) return;  // full: resumes when the client drained it
    if (down_len_ == 0 && !backend_readable_) {
        down_buf_.reset();  // idle: wait without holding a buffer
        backend_poll_inflight_ = true;
        host_.op_submitted();
        host_.loop().poll(&op_backend_readable_, backend_, POLLIN);
        return;
    }
    if (!down_buf_) down_buf_ = host_.buffers().take();
    last_recv_size_ = buf_size_ - down_len_;
    recv_inflight_ = true;
    host_.op_submitted();
    host_.loop().recv(&op_recv_, backend_, down_buf_.data() + down_len_, buf_size_ - down_len_);
}

void BufferedRelay::on_backend_recv(int res) {
    if (res < 0) {
        failed_ = true;
        return host_.relay_failed("backend_reset", std::string("recv from backend: ") + std::strerror(-res));
    }
    if (res == 0) {
        down_eof_ = true;
        if (!first_close_) first_close_ = "backend_close";
    } else {
        backend_readable_ = static_cast<size_t>(res) == last_recv_size_;
        down_len_ += static_cast<size_t>(res);
        counters_.bytes_down += static_cast<uint64_t>(res);
        if (path_->copies_plaintext()) counters_.copied_down += static_cast<uint64_t>(res);
        host_.activity();
    }
    pump_client_write();
}

void BufferedRelay::pump_client_write() {
    while (!failed_ && down_off_ < down_len_) {
        auto r = path_->write({reinterpret_cast<const std::byte*>(down_buf_.data()) + down_off_, down_len_ - down_off_});
        switch (r.status) {
            case crypto::IoStatus::ok:
                down_off_ += r.bytes;
                host_.activity();
                continue;
            case crypto::IoStatus::want_write: return client_io_.want_write();
            case crypto::IoStatus::want_read: return client_io_.writer_needs_read();
            default: return fail(r);
        }
    }
    if (failed_) return;
    if (down_eof_ && !down_done_) {
        if (!client_io_.send_close_notify(*path_, [this](const crypto::IoResult& r) { fail(r); })) return;
        down_done_ = true;
        return maybe_finished();
    }
    pump_backend_recv();
}

void BufferedRelay::maybe_finished() {
    if (up_done_ && down_done_) host_.relay_finished(first_close_ ? first_close_ : "client_close");
}

void BufferedRelay::say_goodbye() {
    if (down_done_ || failed_) return;
    // close_notify only behind the last byte: with plaintext still buffered towards the client, the
    // client must see the truncation.
    if (down_off_ < down_len_) return note_truncated_close();
    path_->shutdown_write();
}

}  // namespace ztp::conn
