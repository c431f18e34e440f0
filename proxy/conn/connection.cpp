#include "proxy/conn/connection.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cstring>

#include "crypto/kernel_record_path.hpp"
#include "crypto/openssl_record_path.hpp"
#include "crypto/record_errors.hpp"
#include "proxy/base/log.hpp"
#include "proxy/base/log_limiter.hpp"
#include "proxy/conn/access_log.hpp"
#include "proxy/conn/proxy_header.hpp"
#include "proxy/conn/record_path_relay.hpp"
#include "proxy/conn/splice_relay.hpp"
#include "proxy/conn/userspace_relay.hpp"
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

}  // namespace

Connection::Connection(ConnectionOwner& owner, std::shared_ptr<const Runtime> runtime,
                       const ListenerRuntime& listener, UniqueFd client, SocketAddress peer,
                       SourceLimit::Slot source)
    : owner_(owner),
      runtime_(std::move(runtime)),
      listener_(listener),
      client_(std::move(client)),
      peer_(peer),
      source_(std::move(source)),
      started_(Clock::now()),
      last_activity_(started_) {
    stats().connections_active.fetch_add(1, std::memory_order_relaxed);
    bump(stats().connections_total);
}

Connection::~Connection() {
    stats().connections_active.fetch_sub(1, std::memory_order_relaxed);
    // The relay (and the pipes it holds) goes before the sockets it points at.
    relay_.reset();
}

void Connection::start() {
    set_nodelay(client_.get());
    ssl_ = listener_.tls->new_session(client_.get());
    if (!ssl_) return relay_failed("internal_error", "SSL_new failed: " + crypto::take_openssl_error());
    // A listener whose sessions always stay with OpenSSL reads ahead from the first byte: one read()
    // for whatever the socket holds instead of a header read and a body read per handshake record
    // (9.3 → 4.3 reads per TLS 1.3 handshake). Other listeners may hand the session over after the
    // handshake, and bytes read ahead could not be given back: they turn it on only once the
    // session stays (crypto::OpenSslRecordPath). Whatever arrives behind the client's Finished then
    // waits in OpenSSL's buffer, and the relay's first SSL_read takes it before any readiness wait.
    if (listener_.config->tls.record_path == config::RecordPathMode::openssl) SSL_set_read_ahead(ssl_.get(), 1);
    continue_handshake();
}

void Connection::on_completion(uint8_t tag, int res, uint32_t) {
    --inflight_;
    if (tag >= kFirstRelayTag) {
        if (relay_ && phase_ == Phase::relaying) relay_->on_completion(tag, res);
        return release_if_idle();
    }
    switch (tag) {
        case kClientIn: client_in_armed_ = false; break;
        case kClientOut: client_out_armed_ = false; break;
        case kBackendConnect:
            if (phase_ == Phase::connecting) on_connected(res);
            return release_if_idle();
        case kBackendHeader:
            if (phase_ == Phase::connecting) on_proxy_header_sent(res);
            return release_if_idle();
    }
    if (phase_ == Phase::handshaking) continue_handshake();
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
            if (auto rejection = crypto::client_cert_rejection(ssl_.get(), step.ssl_reason)) {
                bump(stats().handshake_failures[static_cast<size_t>(crypto::HandshakeFailure::client_cert)]);
                return client_cert_rejected(*rejection);
            }
            bump(stats().handshake_failures[static_cast<size_t>(step.failure)]);
            // Scanners and broken clients fail handshakes all day: debug, not warn.
            log::tls().debug("handshake from {} failed: {}", peer_.to_string(), step.error);
            return close("handshake_failed");
    }
}

void Connection::client_cert_rejected(const crypto::ClientCertRejection& rejection) {
    bump(stats().client_cert_failures[static_cast<size_t>(rejection.reason)]);
    client_cert_error_ = rejection.detail;
    // Any client can fail verification at will: a few lines per second per worker reach the log,
    // the access log still has every one (close=client_cert_rejected, client_cert_error=...).
    thread_local log::LogLimiter limiter(10);
    if (auto held_back = limiter.allow(Clock::now())) {
        log::tls().warn("client {}: client certificate refused ({}): {}{}", peer_.to_string(),
                        crypto::to_string(rejection.reason), rejection.detail,
                        *held_back ? " (" + std::to_string(*held_back) + " more since the last such line)" : "");
    }
    close("client_cert_rejected");
}

void Connection::handshake_done() {
    bump(stats().handshakes_ok);
    session_ = crypto::session_info(ssl_.get());
    if (session_.client_cert.presented) bump(stats().client_certs_verified);
    const Router::Target* target = listener_.router->route(session_.sni);
    backend_cfg_ = target ? runtime_->backend(target->backend) : nullptr;
    if (target) route_index_ = target->route_index;
    if (!backend_cfg_) {
        // The SNI filter refuses unrouted names during the handshake; this is a safety net.
        return relay_failed("no_route", "no route for server name '" + session_.sni + "'");
    }
    choose_record_path();
    if (phase_ == Phase::closing) return;
    phase_ = Phase::connecting;
    activity();
    connect_next_backend();
}

void Connection::note_fallback(crypto::KtlsFallback reason, const std::string& detail) {
    bump(stats().ktls_fallbacks[static_cast<size_t>(reason)]);
    ktls_fallback_ = crypto::to_string(reason);
    log::tls().debug("client {}: kTLS not used: {} ({})", peer_.to_string(), ktls_fallback_, detail);
}

void Connection::choose_record_path() {
    using config::KtlsMode;
    using config::RecordPathMode;
    const auto& tls = listener_.config->tls;
    if (tls.record_path == RecordPathMode::openssl) {
        path_ = std::make_unique<crypto::OpenSslRecordPath>(ssl_.get());
        return;
    }
    const bool kernel_allowed = tls.ktls != KtlsMode::off && tls.record_path != RecordPathMode::userspace;
    const bool kernel_required = tls.ktls == KtlsMode::require || tls.record_path == RecordPathMode::kernel;
    // Straight after the handshake, before anything else reads or writes the socket: the record
    // sequence numbers OpenSSL left us are exact only now.
    auto taken = crypto::take_keys_for_offload(ssl_.get());
    // The record-counting message callback served its purpose: stop paying for it per record.
    SSL_set_msg_callback(ssl_.get(), nullptr);
    if (!taken.keys) {
        // Neither the kernel nor our record layer can carry this session; OpenSSL keeps it.
        if (kernel_allowed) note_fallback(taken.reason, taken.detail);
        if (kernel_required || tls.record_path == RecordPathMode::userspace) {
            log::tls().warn("client {}: the listener requires the {} record path, but: {}", peer_.to_string(),
                            config::to_string(tls.record_path == RecordPathMode::userspace ? RecordPathMode::userspace
                                                                                           : RecordPathMode::kernel),
                            taken.detail);
            return close("record_path_unavailable");
        }
        path_ = std::make_unique<crypto::OpenSslRecordPath>(ssl_.get());
        return;
    }
    if (kernel_allowed) {
        auto moved = crypto::move_to_kernel(client_.get(), *taken.keys);
        if (moved.path) {
            bump(stats().ktls_installs);
            kernel_ = std::move(moved.path);
            cached_session_ = crypto::free_after_offload(std::move(ssl_), listener_.tls->session_cache_ctx());
            return;
        }
        // Counted per reason either way. The fallback is per connection, both directions together:
        // RX is installed first and is where a kernel that cannot offload this version or cipher
        // refuses (see move_to_kernel), so a kernel RX + userspace TX split never arises.
        note_fallback(moved.reason, moved.detail);
        if (moved.fatal) {
            // TX refused after RX went into the kernel: no path can carry this connection any more.
            log::tls().warn("client {}: kTLS TX refused after RX was installed ({}: {}); closing the connection",
                            peer_.to_string(), ktls_fallback_, moved.detail);
            return close("ktls_unavailable");
        }
        if (kernel_required) {
            log::tls().warn("client {}: kTLS {} ({}); closing the connection because the listener requires kTLS",
                            peer_.to_string(), ktls_fallback_, moved.detail);
            return close("ktls_unavailable");
        }
    }
    auto& keys = *taken.keys;
    auto reader = crypto::RecordReader::create(std::move(keys.rx), std::move(keys.rx_secret));
    auto writer = crypto::RecordWriter::create(std::move(keys.tx), std::move(keys.tx_secret), keys.max_plaintext);
    if (!reader || !writer)
        return relay_failed("internal_error", "record layer: " + (reader ? writer.error() : reader.error()).message());
    userspace_.emplace(UserspaceKeys{std::move(reader).value(), std::move(writer).value(), session_version()});
    cached_session_ = crypto::free_after_offload(std::move(ssl_), listener_.tls->session_cache_ctx());
}

config::TlsVersion Connection::session_version() const {
    return SSL_version(ssl_.get()) == TLS1_3_VERSION ? config::TlsVersion::tls1_3 : config::TlsVersion::tls1_2;
}

void Connection::goodbye_before_relay() {
    // Tell the client we are done rather than leaving it to time out, on whichever path owns
    // the session's write direction now.
    if (kernel_) {
        kernel_->shutdown_write();
    } else if (userspace_) {
        std::array<uint8_t, 64> buf{};
        if (auto n = userspace_->writer.seal_alert(buf, crypto::kAlertWarning, crypto::kAlertCloseNotify))
            [[maybe_unused]] auto sent = ::send(client_.get(), buf.data(), *n, MSG_NOSIGNAL | MSG_DONTWAIT);
    } else if (path_) {
        path_->shutdown_write();
    }
}

void Connection::connect_next_backend() {
    const auto& addrs = backend_cfg_->config->addresses;
    if (connect_attempts_ >= addrs.size()) {
        bump(stats().backend_connect_failures);
        log::conn().warn("backend '{}' unreachable for client {}: {} address(es) tried, last error: {}",
                         backend_cfg_->config->name, peer_.to_string(), addrs.size(), last_connect_error_);
        goodbye_before_relay();
        // A timeout is told apart: a backend that drops SYNs (firewall, overloaded accept queue)
        // calls for a different fix than one that refuses.
        return close(last_connect_timed_out_ ? "backend_connect_timeout" : "backend_connect_failed");
    }
    // Round-robin across connections; on failure the next address, until each was tried once.
    if (connect_attempts_ == 0) rotation_start_ = backend_cfg_->next.fetch_add(1, std::memory_order_relaxed);
    size_t index = (rotation_start_ + connect_attempts_) % addrs.size();
    backend_addr_ = addrs[index];
    // Blocking socket for the connect: only io_uring touches it, and io_uring completes it
    // asynchronously instead of surfacing EINPROGRESS to us.
    backend_.reset(::socket(backend_addr_.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!backend_) {
        last_connect_timed_out_ = false;
        last_connect_error_ = std::strerror(errno);
        ++connect_attempts_;
        return connect_next_backend();
    }
    set_nodelay(backend_.get());
    connect_timeout_ = to_timespec(runtime_->policy().limits.backend_connect_timeout);
    connect_started_ = Clock::now();
    ++inflight_;
    owner_.loop().connect(&op_connect_, backend_.get(), backend_addr_.sa(), backend_addr_.len(), &connect_timeout_);
}

void Connection::on_connected(int res) {
    if (res == 0) {
        observe_backend_connect(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - connect_started_));
        if (backend_cfg_->config->proxy_protocol == config::ProxyProtocol::v2) return send_proxy_header();
        phase_ = Phase::relaying;
        return start_relay();
    }
    // -ECANCELED: the linked timeout fired (a close would have left the connecting phase first).
    last_connect_timed_out_ = res == -ECANCELED;
    last_connect_error_ = backend_addr_.to_string() + ": " +
                          (last_connect_timed_out_ ? std::string("connect timed out") : std::strerror(-res));
    log::conn().debug("backend connect failed: {}", last_connect_error_);
    backend_.reset();
    ++connect_attempts_;
    connect_next_backend();
}

void Connection::send_proxy_header() {
    // The destination is the address this connection reached: the concrete local address even
    // when the listener is bound to a wildcard.
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    if (::getsockname(client_.get(), reinterpret_cast<sockaddr*>(&local), &len) != 0)
        return proxy_header_failed(std::string("getsockname: ") + std::strerror(errno));
    auto header =
        pp2::encode(peer_, SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&local), len), session_);
    if (!header) return proxy_header_failed(header.error().message());
    proxy_header_ = std::move(header).value();
    proxy_header_sent_ = 0;
    send_proxy_header_rest();
}

void Connection::send_proxy_header_rest() {
    ++inflight_;
    owner_.loop().send(&op_proxy_header_, backend_.get(), proxy_header_.data() + proxy_header_sent_,
                       proxy_header_.size() - proxy_header_sent_);
}

void Connection::on_proxy_header_sent(int res) {
    if (res <= 0) return proxy_header_failed(res == 0 ? "backend accepted no byte" : std::strerror(-res));
    proxy_header_sent_ += static_cast<size_t>(res);
    // A short send: the rest goes out before anything else, the backend reads one header.
    if (proxy_header_sent_ < proxy_header_.size()) return send_proxy_header_rest();
    proxy_header_ = {};
    phase_ = Phase::relaying;
    start_relay();
}

void Connection::proxy_header_failed(const std::string& detail) {
    log::conn().warn("client {}: PROXY v2 header to backend {} failed: {}", peer_.to_string(),
                     backend_addr_.to_string(), detail);
    goodbye_before_relay();
    close("proxy_header_failed");
}

void Connection::start_relay() {
    activity();
    const size_t buffer = runtime_->policy().limits.connection_buffer_bytes;
    const auto& rules = runtime_->rules().route(route_index_);
    if (rules.any()) {
        // A route with redaction rules reads its plaintext: it cannot be spliced.
        auto up = RedactionStage::open(rules, config::RuleDirection::request, &owner_.redact_scratch());
        auto down = RedactionStage::open(rules, config::RuleDirection::response, &owner_.redact_scratch());
        if (!up || !down)
            return relay_failed("internal_error", "redaction: " + (up ? down.error() : up.error()).message());
        if (userspace_) {
            relay_ = std::make_unique<UserspaceRelay>(static_cast<RelayHost&>(*this), owner_.gated_pools(),
                                                      std::move(userspace_->reader), std::move(userspace_->writer),
                                                      userspace_->version, client_.get(), backend_.get(), buffer,
                                                      std::move(up).value(), std::move(down).value());
            userspace_.reset();
        } else {
            std::unique_ptr<crypto::RecordPath> path = kernel_ ? std::move(kernel_) : std::move(path_);
            relay_ = std::make_unique<RecordPathRelay>(static_cast<RelayHost&>(*this), std::move(path), client_.get(),
                                                       backend_.get(), buffer, std::move(up).value(),
                                                       std::move(down).value());
        }
    } else if (kernel_) {
        relay_ = std::make_unique<SpliceRelay>(static_cast<RelayHost&>(*this), owner_.pipes(), std::move(kernel_),
                                               client_.get(), backend_.get());
    } else if (userspace_) {
        relay_ = std::make_unique<UserspaceRelay>(static_cast<RelayHost&>(*this), owner_.gated_pools(),
                                                  std::move(userspace_->reader), std::move(userspace_->writer),
                                                  userspace_->version, client_.get(), backend_.get(), buffer,
                                                  RedactionStage{}, RedactionStage{});
        userspace_.reset();
    } else {
        relay_ = std::make_unique<RecordPathRelay>(static_cast<RelayHost&>(*this), std::move(path_), client_.get(),
                                                   backend_.get(), buffer, RedactionStage{}, RedactionStage{});
    }
    relay_->start();
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
    // Once the handshake is done the client is owed a close_notify, relay or not yet.
    if (phase_ == Phase::relaying && relay_) relay_->say_goodbye();
    else if (phase_ == Phase::connecting) goodbye_before_relay();
    close(reason);
}

void Connection::relay_failed(const char* reason, const std::string& detail) {
    log::conn().debug("connection from {} closed ({}): {}", peer_.to_string(), reason, detail);
    close(reason);
}

void Connection::close(const char* reason) {
    if (phase_ == Phase::closing) return;
    phase_ = Phase::closing;
    close_reason_ = reason;
    // The session stays resumable after a clean end only, whichever record path carried it.
    cached_session_.end(reason);
    if (ssl_) crypto::end_session(ssl_.get(), listener_.tls->session_cache_ctx(), reason);
    // Pending polls and socket ops complete with -ECANCELED; the connection is freed when the
    // last of them is back (release_if_idle), never while the kernel may still touch buffers.
    if (inflight_ > 0) {
        owner_.loop().cancel_fd(client_.get());
        if (backend_) owner_.loop().cancel_fd(backend_.get());
        if (relay_) relay_->cancel_own_io();
    }
    release_if_idle();
}

void Connection::release_if_idle() {
    if (phase_ != Phase::closing || inflight_ > 0 || released_) return;
    released_ = true;
    RelayCounters c = relay_ ? relay_->counters() : RelayCounters{};
    bump(stats().bytes_up, c.bytes_up);
    bump(stats().bytes_down, c.bytes_down);
    if (relay_) {
        bump(stats().bytes_up_by_path[record_path_index(relay_->rx_path())], c.bytes_up);
        bump(stats().bytes_down_by_path[record_path_index(relay_->tx_path())], c.bytes_down);
    }
    bump(stats().spliced_bytes_up, c.spliced_up);
    bump(stats().spliced_bytes_down, c.spliced_down);
    bump(stats().copied_bytes_up, c.copied_up);
    bump(stats().copied_bytes_down, c.copied_down);
    bump(stats().connections_closed[close_reason_index(close_reason_)]);
    if (runtime_->policy().logging.access_log) {
        AccessRecord r;
        r.ts = log::timestamp_now();
        r.client = peer_.to_string();
        r.listener = listener_.config->name;
        r.worker = owner_.worker_id();
        r.sni = session_.sni;
        r.alpn = session_.alpn;
        r.version = session_.version;
        r.cipher = session_.cipher;
        r.client_subject = session_.client_cert.subject;
        r.client_cert_error = client_cert_error_;
        r.backend = backend_addr_.len() ? backend_addr_.to_string() : "";
        r.rx_path = relay_ ? relay_->rx_path() : "";
        r.tx_path = relay_ ? relay_->tx_path() : "";
        r.ktls_fallback = ktls_fallback_;
        r.counters = c;
        r.duration_ms = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_).count());
        r.close = close_reason_;
        write_access_log(r);
    }
    // A refused client record: its alert is out, but what the client sent after the record may still
    // be queued, and close() on a socket with unread bytes sends a reset, which can overtake the
    // alert and the end of stream at the client. So our FIN goes out first and what is queued is
    // discarded without copying (MSG_TRUNC on TCP), and the close is orderly. Bounded: a client
    // that goes on sending after that gets its reset. Not on the kernel path: a kTLS socket's
    // reads decrypt (KernelRecordPath::fail_with_alert already sent the alert and the FIN there).
    if (relay_ && std::strcmp(relay_->rx_path(), "kernel") != 0 && crypto::counter_for_close_reason(close_reason_))
        discard_unread_client_bytes();
    owner_.connection_finished(this);
}

void Connection::discard_unread_client_bytes() {
    ::shutdown(client_.get(), SHUT_WR);
    static thread_local std::array<uint8_t, 64 * 1024> never_written;  // MSG_TRUNC: the kernel copies nothing
    for (int i = 0; i < 16; ++i) {
        iovec v{never_written.data(), never_written.size()};
        msghdr m{};
        m.msg_iov = &v;
        m.msg_iovlen = 1;
        if (::recvmsg(client_.get(), &m, MSG_TRUNC | MSG_DONTWAIT) <= 0) break;
    }
}

}  // namespace ztp::conn
