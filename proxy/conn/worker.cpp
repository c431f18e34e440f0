#include "proxy/conn/worker.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "proxy/base/log.hpp"
#include "proxy/conn/stats.hpp"

namespace ztp::conn {

Result<std::unique_ptr<Worker>> Worker::create(unsigned id, std::shared_ptr<const Runtime> runtime,
                                               std::vector<ListenSocket> sockets) {
    std::unique_ptr<Worker> w(new Worker());
    w->id_ = id;
    w->runtime_ = std::move(runtime);
    w->sockets_ = std::move(sockets);
    if (w->sockets_.size() >= kTick) return Error{EINVAL, "too many listeners for one worker"};
    auto loop = io::EventLoop::create(4096);
    if (!loop) return loop.error();
    w->loop_ = std::move(loop).value();
    // A pipe's capacity is the splice relay's per-direction buffer: the same bound the buffered
    // relay uses. Idle pipes are kept for reuse up to a small cap (two fds each).
    w->pipes_ = std::make_unique<io::PipePool>(w->runtime_->policy().limits.connection_buffer_bytes, 256);
    // Gated slots hold client records being decrypted and verified plaintext until the backend
    // took it; a connection holds them only while data flows. A slot fits whole records. At most
    // 4096 slots: each partly released slot splits a VMA, and vm.max_map_count is 65530.
    const auto& limits = w->runtime_->policy().limits;
    size_t slot = std::max<size_t>(limits.connection_buffer_bytes, 32 * 1024);
    size_t slots = std::clamp<size_t>(limits.max_connections * 2, 256, 4096);
    auto gated = io::GatedPool::create(slot, slots);
    if (!gated) return gated.error();
    w->gated_ = std::move(gated).value();
    auto scratch = w->runtime_->rules().make_scratch();
    if (!scratch) return scratch.error();
    w->scratch_ = std::move(scratch).value();
    w->wake_fd_.reset(::eventfd(0, EFD_CLOEXEC));
    if (!w->wake_fd_) return errno_error("eventfd");
    for (size_t i = 0; i < w->sockets_.size(); ++i) w->accept_ops_.push_back({w.get(), static_cast<uint8_t>(i)});
    w->accept_armed_.assign(w->sockets_.size(), false);
    return w;
}

Worker::~Worker() {
    join();
    connections_.clear();  // only non-empty if the loop failed; destructors close the sockets
}

void Worker::start() {
    // OpenSSL's socket BIO writes with write(), not send(MSG_NOSIGNAL): a client that vanished
    // would raise SIGPIPE and kill the whole process. Workers cannot run without this.
    ::signal(SIGPIPE, SIG_IGN);
    thread_ = std::thread([this] { run(); });
}

void Worker::join() {
    if (thread_.joinable()) thread_.join();
}

void Worker::request_stop() {
    uint64_t one = 1;
    // eventfd write is async-signal- and thread-safe: the loop's pending read completes.
    [[maybe_unused]] auto n = ::write(wake_fd_.get(), &one, sizeof one);
}

void Worker::run() {
    for (size_t i = 0; i < sockets_.size(); ++i) arm_accept(i);
    arm_tick();
    arm_wake();
    while (!(stopping_ && connections_.empty())) {
        auto r = loop_->run_once();
        if (!r) {
            log::main().error("worker {}: event loop failed: {}", id_, r.error().message());
            break;
        }
        for (Connection* c : finished_) connections_.erase(c);
        finished_.clear();
    }
}

void Worker::arm_accept(size_t i) {
    if (stopping_ || accept_armed_[i]) return;
    accept_armed_[i] = true;
    loop_->multishot_accept(&accept_ops_[i], sockets_[i].fd.get());
}

void Worker::arm_tick() { loop_->timeout(&tick_op_, &tick_interval_); }

void Worker::arm_wake() { loop_->read(&wake_op_, wake_fd_.get(), &wake_value_, sizeof wake_value_); }

void Worker::on_completion(uint8_t tag, int res, uint32_t flags) {
    if (tag == kTick) return on_tick();
    if (tag == kWake) return begin_stop();
    on_accept(tag, res, flags);
}

void Worker::on_accept(size_t i, int res, uint32_t flags) {
    // Multishot accept stays armed while the kernel sets F_MORE; otherwise re-arm (on the next
    // tick after an error such as EMFILE, so a full fd table does not spin the loop).
    if (!(flags & IORING_CQE_F_MORE)) accept_armed_[i] = false;
    if (res < 0) {
        if (res != -ECANCELED) {
            static thread_local Clock::time_point last_log{};
            if (Clock::now() - last_log > std::chrono::seconds(5)) {
                last_log = Clock::now();
                log::main().warn("worker {}: accept failed: {}", id_, std::strerror(-res));
            }
        }
        return;
    }
    UniqueFd fd(res);
    if (stopping_) return;
    if (!(flags & IORING_CQE_F_MORE)) arm_accept(i);
    const auto& limits = runtime_->policy().limits;
    if (stats().connections_active.load(std::memory_order_relaxed) >= static_cast<int64_t>(limits.max_connections)) {
        bump(stats().connections_refused_limit);
        static thread_local Clock::time_point last_log{};
        if (Clock::now() - last_log > std::chrono::seconds(5)) {
            last_log = Clock::now();
            log::conn().warn("connection limit {} reached: refusing new connections", limits.max_connections);
        }
        return;  // closing the socket is the refusal
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getpeername(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return;  // already gone
    const auto& listener = runtime_->listeners()[sockets_[i].listener_index];
    auto conn = std::make_unique<Connection>(*this, runtime_, listener, std::move(fd),
                                             SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len));
    Connection* raw = conn.get();
    connections_.emplace(raw, std::move(conn));
    raw->start();
}

void Worker::on_tick() {
    auto now = Clock::now();
    for (auto& [raw, conn] : connections_) raw->check_deadlines(now);
    for (size_t i = 0; i < sockets_.size(); ++i) arm_accept(i);
    arm_tick();
}

void Worker::begin_stop() {
    if (stopping_) return;
    stopping_ = true;
    for (auto& s : sockets_) loop_->cancel_fd(s.fd.get());
    for (auto& [raw, conn] : connections_) raw->abort("shutdown");
}

}  // namespace ztp::conn
