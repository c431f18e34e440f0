// Worker: one thread, one io_uring, its own SO_REUSEPORT socket per listener (the kernel spreads
// new connections across workers), and the connections it accepted. Nothing is shared between
// workers except the immutable Runtime snapshot and the relaxed counters in stats.hpp.
#pragma once

#include <sys/eventfd.h>

#include <atomic>
#include <mutex>
#include <cstdint>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "proxy/base/log_limiter.hpp"
#include "proxy/conn/connection.hpp"
#include "proxy/conn/listener_admission.hpp"
#include "proxy/conn/runtime.hpp"
#include "proxy/conn/source_limit.hpp"
#include "proxy/io/event_loop.hpp"

namespace ztp::conn {

struct ListenSocket {
    size_t listener_index;  // into Runtime::listeners()
    UniqueFd fd;
    std::shared_ptr<ListenerAdmission> admission;  // shared by the listener's sockets
};

class Worker final : public ConnectionOwner, public io::CompletionHandler {
public:
    static Result<std::unique_ptr<Worker>> create(unsigned id, std::shared_ptr<const Runtime> runtime,
                                                  std::vector<ListenSocket> sockets);
    ~Worker();

    void start();          // spawns the thread
    // Any thread: stop accepting; live connections may finish until `deadline`, then they are
    // ended with close_notify and the loop is left. A deadline in the past ends them at once.
    void request_stop(Clock::time_point deadline);
    void join();
    bool done() const { return done_.load(std::memory_order_acquire); }  // the loop has ended
    // Any thread: new connections use `runtime` from now on; live ones keep the snapshot they
    // started with. The listener set must be the same (same order) as the current one's.
    void swap_runtime(std::shared_ptr<const Runtime> runtime);

    io::EventLoop& loop() override { return *loop_; }
    io::PipePool& pipes() override { return *pipes_; }
    io::GatedPools gated_pools() override { return {*gated_, *gated_burst_}; }
    redact::Scratch& redact_scratch() override { return scratch_; }
    io::BufferPool& buffers() override { return *buffers_; }
    void connection_finished(Connection* c) override { finished_.push_back(c); }
    unsigned worker_id() const override { return id_; }
    void on_completion(uint8_t tag, int res, uint32_t flags) override;

private:
    static constexpr uint8_t kTick = 254;
    static constexpr uint8_t kWake = 255;

    Worker() = default;
    void run();
    void settle();
    void arm_accept(size_t i);
    void on_accept(size_t i, int res, uint32_t flags);
    void on_tick();
    void check_drain_deadline(Clock::time_point now);
    void begin_stop();
    void on_wake();
    void adopt_pending_runtime();
    void arm_tick();
    void arm_wake();

    unsigned id_ = 0;
    std::shared_ptr<const Runtime> runtime_;
    std::unique_ptr<io::EventLoop> loop_;
    std::unique_ptr<io::PipePool> pipes_;
    std::unique_ptr<io::GatedPool> gated_;  // declared before connections_: outlive them
    std::unique_ptr<io::GatedPool> gated_burst_;
    redact::Scratch scratch_;               // the matcher's per-thread working memory
    std::unique_ptr<io::BufferPool> buffers_;
    std::vector<ListenSocket> sockets_;
    std::vector<io::Op> accept_ops_;
    std::vector<bool> accept_armed_;
    std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
    std::vector<Connection*> finished_;
    UniqueFd wake_fd_;
    uint64_t wake_value_ = 0;
    io::Op tick_op_{this, kTick};
    io::Op wake_op_{this, kWake};
    __kernel_timespec tick_interval_{0, 250'000'000};
    bool stopping_ = false;
    std::atomic<int64_t> stop_deadline_ns_{0};  // steady_clock, set by request_stop
    bool aborted_all_ = false;
    std::atomic<bool> done_{false};
    log::LogLimiter refusal_log_{1};       // limits refusing connections: a line a second at most
    log::LogLimiter accept_error_log_{1};  // accept failing (e.g. EMFILE)
    std::atomic<bool> stop_requested_{false};
    std::mutex pending_mutex_;
    std::shared_ptr<const Runtime> pending_runtime_;  // guarded by pending_mutex_
    std::atomic<bool> runtime_pending_{false};         // set with pending_runtime_: checked per accept
    std::thread thread_;
};

}  // namespace ztp::conn
