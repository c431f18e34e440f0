#include "proxy/conn/connection.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstring>

#include "crypto/openssl_record_path.hpp"
#include "proxy/base/log.hpp"
#include "proxy/conn/stats.hpp"

namespace ztp::conn {

namespace {

void set_nodelay(int fd) {
    int one = 1;
    // Request/response traffic: never hold a small segment back waiting for more.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

__kernel_timespec to_timespec(std::chrono::milliseconds ms) {
    __kernel_timespec ts{};
    ts.tv_sec = ms.count() / 1000;
    ts.tv_nsec = (ms.count() % 1000) * 1'000'000;
    return ts;
}

const char* client_error_reason(const crypto::IoResult& r) {
    return (r.sys_errno == ECONNRESET || r.sys_errno == EPIPE) ? "client_reset" : "client_error";
}

}  // namespace

Connection::Connection(ConnectionOwner& owner, std::shared_ptr<const Runtime> runtime,
                       const ListenerRuntime& listener, UniqueFd client, SocketAddress peer)
    : owner_(owner),
      runtime_(std::move(runtime)),
      listener_(listener),
      client_(std::move(client)),
      peer_(peer),
      started_(Clock::now()),
      last_activity_(started_) {
    stats().connections_active.fetch_add(1, std::memory_order_relaxed);
    bump(stats().connections_total);
}

Connection::~Connection() {
    stats().connections_active.fetch_sub(1, std::memory_order_relaxed);
    bump(stats().bytes_up, bytes_up_);
    bump(stats().bytes_down, bytes_down_);
}

void Connection::start() {
    set_nodelay(client_.get());
    ssl_ = listener_.tls->new_session(client_.get());
    if (!ssl_) return fail("internal_error", "SSL_new failed: " + crypto::take_openssl_error());
    continue_handshake();
}

void Connection::on_completion(uint8_t tag, int res, uint32_t) {
    op_done();
    switch (tag) {
        case kClientIn:
            client_in_armed_ = false;
            if (phase_ == Phase::handshaking) {
                continue_handshake();
            } else if (phase_ == Phase::relaying) {
                pump_client_read();
                if (writer_waits_for_read_) {
                    writer_waits_for_read_ = false;
                    pump_client_write();
                }
            }
            break;
        case kClientOut:
            client_out_armed_ = false;
            if (phase_ == Phase::handshaking) {
                continue_handshake();
            } else if (phase_ == Phase::relaying) {
                pump_client_write();
                if (reader_waits_for_write_) {
                    reader_waits_for_write_ = false;
                    pump_client_read();
                }
            }
            break;
        case kBackendConnect:
            if (phase_ == Phase::connecting) on_connected(res);
            break;
        case kBackendRecv:
            recv_inflight_ = false;
            if (phase_ == Phase::relaying) on_backend_recv(res);
            break;
        case kBackendSend:
            send_inflight_ = false;
            if (phase_ == Phase::relaying) on_backend_send(res);
            break;
    }
    release_if_idle();
}

void Connection::arm_client(Tag tag) {
    bool& armed = tag == kClientIn ? client_in_armed_ : client_out_armed_;
    if (armed) return;
    armed = true;
    ++inflight_;
    owner_.loop().poll(tag == kClientIn ? &op_client_in_ : &op_client_out_, client_.get(),
                       tag == kClientIn ? POLLIN : POLLOUT);
}

void Connection::continue_handshake() {
    auto step = crypto::handshake_step(ssl_.get());
    switch (step.status) {
        case crypto::HandshakeStatus::done: return handshake_done();
        case crypto::HandshakeStatus::want_read: return arm_client(kClientIn);
        case crypto::HandshakeStatus::want_write: return arm_client(kClientOut);
        case crypto::HandshakeStatus::failed:
            bump(stats().handshakes_failed);
            session_.sni = crypto::lower_sni(ssl_.get());
            // Scanners and broken clients fail handshakes all day: debug, not warn.
            log::tls().debug("handshake from {} failed: {}", peer_.to_string(), step.error);
            return close("handshake_failed");
    }
}

void Connection::handshake_done() {
    bump(stats().handshakes_ok);
    session_ = crypto::session_info(ssl_.get());
    const std::string* backend = listener_.router->route(session_.sni);
    backend_cfg_ = backend ? runtime_->backend(*backend) : nullptr;
    if (!backend_cfg_) {
        // The SNI filter refuses unrouted names during the handshake; this is a safety net.
        return fail("no_route", "no route for server name '" + session_.sni + "'");
    }
    phase_ = Phase::connecting;
    touch();
    connect_next_backend();
}

void Connection::connect_next_backend() {
    const auto& addrs = backend_cfg_->config->addresses;
    if (connect_attempts_ >= addrs.size()) {
        bump(stats().backend_connect_failures);
        log::conn().warn("backend '{}' unreachable for client {}: {} address(es) tried, last error: {}",
                         backend_cfg_->config->name, peer_.to_string(), addrs.size(), last_connect_error_);
        // Tell the client we are done rather than leaving it to time out.
        crypto::OpenSslRecordPath(ssl_.get()).shutdown_write();
        return close("backend_connect_failed");
    }
    // Round-robin across connections; on failure the next address, until each was tried once.
    if (connect_attempts_ == 0) rotation_start_ = backend_cfg_->next.fetch_add(1, std::memory_order_relaxed);
    size_t index = (rotation_start_ + connect_attempts_) % addrs.size();
    backend_addr_ = addrs[index];
    // Blocking socket on purpose: only io_uring touches it, and io_uring completes blocking
    // sockets asynchronously instead of surfacing EAGAIN/EINPROGRESS to us.
    backend_.reset(::socket(backend_addr_.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!backend_) {
        last_connect_error_ = std::strerror(errno);
        ++connect_attempts_;
        return connect_next_backend();
    }
    set_nodelay(backend_.get());
    connect_timeout_ = to_timespec(runtime_->policy().limits.backend_connect_timeout);
    ++inflight_;
    owner_.loop().connect(&op_connect_, backend_.get(), backend_addr_.sa(), backend_addr_.len(), &connect_timeout_);
}

void Connection::on_connected(int res) {
    if (res == 0) {
        phase_ = Phase::relaying;
        return start_relay();
    }
    last_connect_error_ = backend_addr_.to_string() + ": " +
                          (res == -ECANCELED ? std::string("connect timed out") : std::strerror(-res));
    log::conn().debug("backend connect failed: {}", last_connect_error_);
    backend_.reset();
    ++connect_attempts_;
    connect_next_backend();
}

void Connection::start_relay() {
    touch();
    buf_size_ = runtime_->policy().limits.connection_buffer_bytes;
    up_buf_ = std::make_unique<std::byte[]>(buf_size_);
    down_buf_ = std::make_unique<std::byte[]>(buf_size_);
    path_ = std::make_unique<crypto::OpenSslRecordPath>(ssl_.get());
    pump_client_read();
    pump_backend_recv();
}

void Connection::pump_client_read() {
    while (phase_ == Phase::relaying && !up_eof_ && up_len_ < buf_size_) {
        auto r = path_->read({up_buf_.get() + up_len_, buf_size_ - up_len_});
        switch (r.status) {
            case crypto::IoStatus::ok:
                up_len_ += r.bytes;
                bytes_up_ += r.bytes;
                touch();
                continue;
            case crypto::IoStatus::want_read: arm_client(kClientIn); break;
            case crypto::IoStatus::want_write:
                reader_waits_for_write_ = true;
                arm_client(kClientOut);
                break;
            case crypto::IoStatus::eof:
            case crypto::IoStatus::eof_unclean:
                up_eof_ = true;
                if (!first_close_) first_close_ = "client_close";
                break;
            case crypto::IoStatus::error: return fail(client_error_reason(r), r.reason);
        }
        break;
    }
    pump_backend_send();
}

void Connection::pump_backend_send() {
    if (phase_ != Phase::relaying || send_inflight_) return;
    if (up_off_ < up_len_) {
        send_inflight_ = true;
        ++inflight_;
        owner_.loop().send(&op_send_, backend_.get(), up_buf_.get() + up_off_, up_len_ - up_off_);
        return;
    }
    up_off_ = up_len_ = 0;
    if (up_eof_ && !up_done_) {
        // The client's close_notify (or FIN) becomes a FIN towards the backend; the other
        // direction keeps flowing until the backend finishes too.
        ::shutdown(backend_.get(), SHUT_WR);
        up_done_ = true;
        maybe_finish_directions();
    }
}

void Connection::on_backend_send(int res) {
    if (res < 0) return fail("backend_reset", std::string("send to backend: ") + std::strerror(-res));
    up_off_ += static_cast<size_t>(res);
    touch();
    if (up_off_ == up_len_) up_off_ = up_len_ = 0;
    pump_client_read();
}

void Connection::pump_backend_recv() {
    if (phase_ != Phase::relaying || recv_inflight_ || down_eof_) return;
    if (down_off_ == down_len_) down_off_ = down_len_ = 0;
    if (down_len_ == buf_size_) return;  // full: resumes when the client drained it
    recv_inflight_ = true;
    ++inflight_;
    owner_.loop().recv(&op_recv_, backend_.get(), down_buf_.get() + down_len_, buf_size_ - down_len_);
}

void Connection::on_backend_recv(int res) {
    if (res < 0) return fail("backend_reset", std::string("recv from backend: ") + std::strerror(-res));
    if (res == 0) {
        down_eof_ = true;
        if (!first_close_) first_close_ = "backend_close";
    } else {
        down_len_ += static_cast<size_t>(res);
        bytes_down_ += static_cast<uint64_t>(res);
        touch();
    }
    pump_client_write();
}

void Connection::pump_client_write() {
    while (phase_ == Phase::relaying && down_off_ < down_len_) {
        auto r = path_->write({down_buf_.get() + down_off_, down_len_ - down_off_});
        switch (r.status) {
            case crypto::IoStatus::ok:
                down_off_ += r.bytes;
                touch();
                continue;
            case crypto::IoStatus::want_write: return arm_client(kClientOut);
            case crypto::IoStatus::want_read:
                writer_waits_for_read_ = true;
                return arm_client(kClientIn);
            case crypto::IoStatus::eof:
            case crypto::IoStatus::eof_unclean:
            case crypto::IoStatus::error: return fail(client_error_reason(r), r.reason);
        }
    }
    if (phase_ != Phase::relaying) return;
    if (down_eof_ && !down_done_) {
        auto r = path_->shutdown_write();
        if (r.status == crypto::IoStatus::want_write) return arm_client(kClientOut);
        if (r.status == crypto::IoStatus::want_read) {
            writer_waits_for_read_ = true;
            return arm_client(kClientIn);
        }
        if (r.status == crypto::IoStatus::error) return fail(client_error_reason(r), r.reason);
        down_done_ = true;
        return maybe_finish_directions();
    }
    pump_backend_recv();
}

void Connection::maybe_finish_directions() {
    if (up_done_ && down_done_) close(first_close_ ? first_close_ : "client_close");
}

void Connection::check_deadlines(Clock::time_point now) {
    const auto& limits = runtime_->policy().limits;
    if (phase_ == Phase::handshaking && now - started_ > limits.handshake_timeout) {
        bump(stats().handshake_timeouts);
        return close("handshake_timeout");
    }
    if (phase_ == Phase::relaying && now - last_activity_ > limits.idle_timeout) {
        bump(stats().idle_timeouts);
        return abort("idle_timeout");
    }
}

void Connection::abort(const char* reason) {
    if (phase_ == Phase::relaying && !down_done_) path_->shutdown_write();  // best effort
    close(reason);
}

void Connection::fail(const char* reason, const std::string& detail) {
    log::conn().debug("connection from {} closed ({}): {}", peer_.to_string(), reason, detail);
    close(reason);
}

void Connection::close(const char* reason) {
    if (phase_ == Phase::closing) return;
    phase_ = Phase::closing;
    close_reason_ = reason;
    // Pending polls and socket ops complete with -ECANCELED; the slot is freed when the last
    // of them is back (release_if_idle), never while the kernel may still touch our buffers.
    if (inflight_ > 0) {
        owner_.loop().cancel_fd(client_.get());
        if (backend_) owner_.loop().cancel_fd(backend_.get());
    }
    release_if_idle();
}

void Connection::release_if_idle() {
    if (phase_ != Phase::closing || inflight_ > 0 || released_) return;
    released_ = true;
    if (runtime_->policy().logging.access_log) {
        AccessRecord r;
        r.ts = log::timestamp_now();
        r.client = peer_.to_string();
        r.listener = listener_.config->name;
        r.sni = session_.sni;
        r.alpn = session_.alpn;
        r.version = session_.version;
        r.cipher = session_.cipher;
        r.backend = backend_addr_.len() ? backend_addr_.to_string() : "";
        r.rx_path = path_ ? path_->rx_name() : "";
        r.tx_path = path_ ? path_->tx_name() : "";
        r.bytes_up = bytes_up_;
        r.bytes_down = bytes_down_;
        r.duration_ms = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_).count());
        r.close = close_reason_;
        write_access_log(r);
    }
    owner_.connection_finished(this);
}

}  // namespace ztp::conn
