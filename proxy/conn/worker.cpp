#include "proxy/conn/worker.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <thread>

#include "crypto/record_layer.hpp"
#include "proxy/base/log.hpp"
#include "proxy/conn/pipe_budget.hpp"
#include "proxy/conn/relay_memory.hpp"
#include "proxy/conn/stats.hpp"
#include "proxy/conn/userspace_relay.hpp"

namespace ztp::conn {

namespace {

size_t max_map_count() {
    size_t n = 65530;  // the kernel's default
    if (std::ifstream f("/proc/sys/vm/max_map_count"); f) f >> n;
    return n;
}

size_t worker_count(const config::Policy& policy) {
    return policy.runtime.workers ? policy.runtime.workers : std::max(1u, std::thread::hardware_concurrency());
}

size_t burst_slots(const config::Policy& policy) {
    return std::clamp<size_t>(max_map_count() / 4 / worker_count(policy) / 2, 16, 256);
}

// The gated pools' VMAs are shared with everything else of the process under one
// vm.max_map_count: past it, a release's mprotect fails with ENOMEM (the batch fails, the slot is
// quarantined until a re-gate succeeds). Warn at start with the number needed, not at the first
// busy hour. Per worker: a packed pool splits its release view once per partly released slot
// (2N+1 VMAs) plus the ingest view; an isolated pool keeps two VMAs per slot (slot + guard) plus
// its ingest view. 4096 more for the binary, libraries, thread stacks and the rings.
void check_max_map_count(const config::Policy& policy, size_t bulk_slots, size_t burst) {
    const size_t needed = worker_count(policy) * ((2 * bulk_slots + 2) + (2 * burst + 2)) + 4096;
    const size_t have = max_map_count();
    if (have < needed)
        log::main().warn("vm.max_map_count is {}, the gated pools of {} workers may need up to {} memory maps: "
                         "raise it (sysctl vm.max_map_count={}) or lower limits.max_connections",
                         have, worker_count(policy), needed, needed);
}

// Empty pipes each worker's PipePool keeps for reuse (two fds each).
constexpr size_t kIdlePipes = 256;

// The splice pipes' sizes and numbers are bounded per user by fs.pipe-max-size and
// fs.pipe-user-pages-soft/-hard (pipe_budget.hpp), and ztproxy runs without the capabilities that
// lift them. Past them pipes silently come out smaller (counted at run time): say at start what the
// policy needs, with the sysctl to set. Only when some connection can take the kernel path: a
// listener that may use kTLS, and a route without rules (routes with rules never splice).
void check_pipe_limits(const config::Policy& policy) {
    const bool kernel_listener = std::any_of(policy.listeners.begin(), policy.listeners.end(), [](const auto& l) {
        return l.tls.ktls != config::KtlsMode::off && (l.tls.record_path == config::RecordPathMode::automatic ||
                                                       l.tls.record_path == config::RecordPathMode::kernel);
    });
    const bool plain_route =
        std::any_of(policy.routes.begin(), policy.routes.end(), [](const auto& r) { return r.rules.empty(); });
    if (!kernel_listener || !plain_route) return;
    PipeDemand demand{policy.limits.max_connections, worker_count(policy), kIdlePipes,
                      policy.limits.connection_buffer_bytes};
    for (const std::string& line : pipe_limit_warnings(demand, read_pipe_limits())) log::main().warn("{}", line);
}

// The relays' memory bound from the policy (relay_memory.hpp): stated at start, and a warning when
// max_connections could take the process past the memory it may use.
void state_relay_memory(const config::Policy& policy, const io::GatedPool& bulk, const io::GatedPool& burst,
                        size_t pool_buffer) {
    const bool rules =
        std::any_of(policy.routes.begin(), policy.routes.end(), [](const auto& r) { return !r.rules.empty(); });
    const RelayMemoryInputs in{policy.limits.connection_buffer_bytes, pool_buffer, policy.limits.max_connections,
                               worker_count(policy),
                               bulk.slots() * bulk.slot_size() + burst.slots() * burst.slot_size(), rules};
    const RelayMemoryBound bound = relay_memory_bound(in);
    log::main().info("relay memory: at most {} KiB per connection ({}), {} MiB at max_connections {} with the "
                     "gated pools", (bound.per_connection + 1023) / 1024, bound.costliest,
                     (bound.process + (size_t{1} << 20) - 1) >> 20, policy.limits.max_connections);
    if (auto w = relay_memory_warning(in, bound, process_memory_limit())) log::main().warn("{}", *w);
}

}  // namespace

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
    if (id == 0 && !w->loop_->restricted())
        log::main().warn("this kernel cannot restrict io_uring opcodes (< 5.10): the seccomp filter does not "
                         "cover what the rings can do");
    // A pipe's capacity is the splice relay's per-direction buffer: connection_buffer, or what the
    // kernel allowed (pipe_pool.hpp). Idle pipes are kept for reuse up to a small cap.
    w->pipes_ = std::make_unique<io::PipePool>(w->runtime_->policy().limits.connection_buffer_bytes, kIdlePipes,
                                               &stats().pipe_resize_failures);
    if (id == 0) check_pipe_limits(w->runtime_->policy());
    // Gated slots hold client records being decrypted and verified plaintext until the backend
    // took it; a connection holds them only while data flows. 256 KiB slots: the gate costs two
    // mprotects per batch, and bigger batches took upload from 0.91 to 0.70 CPU-s/GB (64 KiB
    // slots before; OpenSSL path 0.77). A slot fits whole records. At most
    // 4096 slots: each partly released slot splits a VMA, and vm.max_map_count is 65530.
    const auto& limits = w->runtime_->policy().limits;
    size_t slot = std::max<size_t>(limits.connection_buffer_bytes, 256 * 1024);
    size_t slots = std::clamp<size_t>(limits.max_connections * 2, 256, 4096);
    auto gated = io::GatedPool::create(slot, slots);
    if (!gated) return gated.error();
    w->gated_ = std::move(gated).value();
    // Burst slots: one record each, isolated (gated_pool.hpp, Layout), for the first read after a
    // connection was idle. Measured on keep-alive 1 KiB requests (wrk -c32, one worker): with
    // packed slots the per-request gate (VMA split + merge on every request) took 33% of the
    // proxy's CPU; burst slots brought it to 20% and the request from 21.8 to 17.9 CPU-us. Two
    // VMAs per slot for the worker's lifetime: the count is bounded by a quarter of
    // vm.max_map_count shared by all workers, and when the burst pool is empty the bulk pool serves.
    auto burst = io::GatedPool::create(crypto::kRecordMaxSize, burst_slots(w->runtime_->policy()),
                                       io::GatedPool::Layout::isolated);
    if (!burst) return burst.error();
    w->gated_burst_ = std::move(burst).value();
    if (id == 0) check_max_map_count(w->runtime_->policy(), slots, w->gated_burst_->slots());
    // One buffer size for every relay: a per-direction buffer, or the userspace path's batch of
    // record slots (UserspaceRelay::kBatchRecords at least), whichever is larger. Relays touch
    // only what they use of it. The idle buffers kept warm are capped at 16 MiB.
    size_t records = std::max<size_t>(UserspaceRelay::kBatchRecords,
                                      limits.connection_buffer_bytes / crypto::kRecordMaxPlaintext);
    size_t buffer = std::max<size_t>(limits.connection_buffer_bytes, records * crypto::kRecordMaxSize);
    w->buffers_ = std::make_unique<io::BufferPool>(buffer, std::max<size_t>(16, (size_t{16} << 20) / buffer));
    if (id == 0) state_relay_memory(w->runtime_->policy(), *w->gated_, *w->gated_burst_, buffer);
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

void Worker::request_stop(Clock::time_point deadline) {
    stop_deadline_ns_.store(deadline.time_since_epoch().count(), std::memory_order_relaxed);
    stop_requested_.store(true, std::memory_order_release);
    uint64_t one = 1;
    // eventfd write is async-signal- and thread-safe: the loop's pending read completes.
    [[maybe_unused]] auto n = ::write(wake_fd_.get(), &one, sizeof one);
}

void Worker::swap_runtime(std::shared_ptr<const Runtime> runtime) {
    {
        std::lock_guard lock(pending_mutex_);
        pending_runtime_ = std::move(runtime);
    }
    runtime_pending_.store(true, std::memory_order_release);
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_.get(), &one, sizeof one);
}

void Worker::on_wake() {
    arm_wake();  // later requests (a second signal, another reload) must get through too
    adopt_pending_runtime();
    if (stop_requested_.load(std::memory_order_acquire)) begin_stop();
}

void Worker::adopt_pending_runtime() {
    std::shared_ptr<const Runtime> next;
    {
        std::lock_guard lock(pending_mutex_);
        runtime_pending_.store(false, std::memory_order_relaxed);
        next = std::move(pending_runtime_);
    }
    if (!next) return;
    // Live connections still scan with the old rules' databases: the scratch must serve both.
    if (auto r = next->rules().grow_scratch(scratch_); !r) {
        log::main().error("worker {}: reload not applied: redaction scratch: {}", id_, r.error().message());
        return;
    }
    runtime_ = std::move(next);
}

void Worker::run() {
    for (size_t i = 0; i < sockets_.size(); ++i) arm_accept(i);
    arm_tick();
    arm_wake();
    // Leave only once every connection ended and every accept completed for good: a listening
    // socket left open (an accept still armed in io_uring holds it) would keep taking
    // connections into its backlog that nobody serves.
    auto accepts_done = [this] { return std::none_of(accept_armed_.begin(), accept_armed_.end(), [](bool b) { return b; }); };
    while (!(stopping_ && connections_.empty() && accepts_done())) {
        auto r = loop_->run_once();
        if (!r) {
            log::main().error("worker {}: event loop failed: {}", id_, r.error().message());
            break;
        }
        settle();
    }
    done_.store(true, std::memory_order_release);
}

void Worker::settle() {
    // Between two loop turns no connection's code is on the stack: the safe point. Finished
    // connections are freed (their slots come back, their waits end), then the clients promised
    // a gated slot are woken, oldest first; a woken client may finish or free slots in turn (of
    // either pool), so until nothing is left to do: the next turn may block until the next tick.
    size_t woken = 0;
    do {
        for (Connection* c : finished_) connections_.erase(c);
        finished_.clear();
        woken = gated_->wake_waiters() + gated_burst_->wake_waiters();
    } while (woken > 0 || !finished_.empty());
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
    if (tag == kWake) return on_wake();
    on_accept(tag, res, flags);
}

void Worker::on_accept(size_t i, int res, uint32_t flags) {
    // Multishot accept stays armed while the kernel sets F_MORE; otherwise re-arm (on the next
    // tick after an error such as EMFILE, so a full fd table does not spin the loop).
    if (!(flags & IORING_CQE_F_MORE)) {
        accept_armed_[i] = false;
        // Draining: the last completion of this accept. Closing the socket now makes the
        // kernel refuse new connections instead of queueing them behind us.
        if (stopping_) sockets_[i].fd.reset();
    }
    if (res < 0) {
        if (res != -ECANCELED && accept_error_log_.allow(Clock::now()))
            log::main().warn("worker {}: accept failed: {}", id_, std::strerror(-res));
        return;
    }
    UniqueFd fd(res);
    if (stopping_) return;
    // "reload applied" is logged once every worker was handed the new runtime, but this accept's
    // completion may come before the wake-up's in the same loop turn: a connection accepted after
    // a reload must not start on the old policy (a removed ticket key would still resume).
    if (runtime_pending_.load(std::memory_order_acquire)) adopt_pending_runtime();
    if (!(flags & IORING_CQE_F_MORE)) arm_accept(i);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getpeername(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return;  // already gone
    auto peer = SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    // Where the kernel could not take admission, it is judged here, before a byte is read: closing
    // unanswered is the refusal (counted by the fallback; logged at debug: it is the client's doing).
    if (sockets_[i].admission && !sockets_[i].admission->admit(peer)) {
        log::conn().debug("client {} refused by admission on listener '{}'", peer.to_string(),
                          sockets_[i].admission->listener());
        return;
    }
    // Limits: closing the socket is the refusal. Counted always, logged at most once a second per
    // worker (a flood must not turn into a flood of log lines).
    const auto& limits = runtime_->policy().limits;
    if (stats().connections_active.load(std::memory_order_relaxed) >= static_cast<int64_t>(limits.max_connections)) {
        bump(stats().connections_refused_limit);
        if (refusal_log_.allow(Clock::now()))
            log::conn().warn("connection limit {} reached: refusing new connections ({} refused so far)",
                             limits.max_connections, stats().connections_refused_limit.load());
        return;
    }
    auto source = SourceLimit::process().acquire(peer, limits.max_connections_per_source);
    if (!source.admitted) {
        bump(stats().connections_refused_per_source);
        if (refusal_log_.allow(Clock::now()))
            log::conn().warn("client {} holds max_connections_per_source = {}: refusing its new connections "
                             "({} refused so far)", peer.ip_string(), limits.max_connections_per_source,
                             stats().connections_refused_per_source.load());
        return;
    }
    const auto& listener = runtime_->listeners()[sockets_[i].listener_index];
    auto conn = std::make_unique<Connection>(*this, runtime_, listener, std::move(fd), peer, std::move(source.slot));
    Connection* raw = conn.get();
    connections_.emplace(raw, std::move(conn));
    raw->start();
}

void Worker::check_drain_deadline(Clock::time_point now) {
    if (!stopping_ || aborted_all_ ||
        now.time_since_epoch().count() < stop_deadline_ns_.load(std::memory_order_relaxed))
        return;
    if (!connections_.empty())
        log::main().info("worker {}: drain deadline reached, closing {} connection(s)", id_, connections_.size());
    aborted_all_ = true;
    for (auto& [raw, conn] : connections_) raw->abort("shutdown");
}

void Worker::on_tick() {
    auto now = Clock::now();
    for (auto& [raw, conn] : connections_) raw->check_deadlines(now);
    check_drain_deadline(now);
    // The one retry left for clients waiting on a gated slot: slots in quarantine (their re-gate
    // failed) come back only by a retry, not by a connection giving them back.
    gated_->retry_quarantined();
    for (size_t i = 0; i < sockets_.size(); ++i) arm_accept(i);
    arm_tick();
}

void Worker::begin_stop() {
    if (stopping_) {  // a second request (e.g. a second SIGTERM): may move the deadline closer
        check_drain_deadline(Clock::now());
        return;
    }
    stopping_ = true;
    // Cancel the accepts; each listening socket is closed when its accept has completed for
    // good (on_accept). Closing it here would be too early: the cancel looks the fd up when it
    // is submitted, and an armed multishot accept keeps the socket listening inside io_uring.
    for (size_t i = 0; i < sockets_.size(); ++i) {
        if (accept_armed_[i]) loop_->cancel_fd(sockets_[i].fd.get());
        else sockets_[i].fd.reset();
    }
    log::main().debug("worker {}: draining {} connection(s)", id_, connections_.size());
    check_drain_deadline(Clock::now());
}

}  // namespace ztp::conn
