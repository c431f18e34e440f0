// Steering in the kernel: the SO_REUSEPORT selector of bpf/steering.bpf.c. One per listener (one
// reuseport group): slot i of its socket array is worker i's listening socket, and a client's
// source address picks the slot (same address → same worker; see the .bpf.c for why).
//
//   auto st = Steering::load(workers);            // open → rodata (worker count, seed) → load
//   st.value()->attach(fds)                       // after listen() on every fd (the kernel only
//                                                 // takes listening sockets into the array)
//   st.value()->set_worker(i, new_fd)             // reload: swap one worker's socket
//
// Without it (load fails: no privileges) the kernel's default 4-tuple hash spreads connections;
// nothing else changes, so a failed load is logged and ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "proxy/base/result.hpp"
#include "proxy/base/socket_address.hpp"

struct steering_bpf;  // the bpftool skeleton (generated: <build>/generated/bpf/steering.skel.h)

namespace ztp::bpf {

class Steering {
public:
    static constexpr size_t kMaxWorkers = 1024;

    // `seed` 0 = random (per process). Tests pass one to make worker_for() reproducible.
    static Result<std::unique_ptr<Steering>> load(size_t workers, uint32_t seed = 0);
    ~Steering();
    Steering(const Steering&) = delete;
    Steering& operator=(const Steering&) = delete;

    // group_fds[i] = worker i's socket: bound with SO_REUSEPORT to the same address, listening.
    // Fills the array, then attaches the program to the group through group_fds[0].
    Result<void> attach(const std::vector<int>& group_fds);
    Result<void> set_worker(size_t index, int fd);

    size_t workers() const { return workers_; }
    // The worker the program picks for a client at `peer` (when that worker's slot is filled).
    size_t worker_for(const SocketAddress& peer) const;
    int prog_fd() const;

private:
    Steering(steering_bpf* skel, size_t workers, uint32_t seed) : skel_(skel), workers_(workers), seed_(seed) {}

    steering_bpf* skel_;
    size_t workers_;
    uint32_t seed_;
};

}  // namespace ztp::bpf
