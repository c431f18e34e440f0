#include "bpf/steering.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <cerrno>

#include "bpf/cidr.hpp"
#include "bpf/libbpf_log.hpp"
#include "bpf/steering.skel.h"
#include "bpf/ztp_bpf_shared.h"

namespace ztp::bpf {

static_assert(Steering::kMaxWorkers == ZTP_STEERING_MAX_WORKERS);

Steering::~Steering() { steering_bpf__destroy(skel_); }

Result<std::unique_ptr<Steering>> Steering::load(size_t workers, uint32_t seed) {
    if (workers == 0 || workers > kMaxWorkers) return make_error(EINVAL, "bpf steering: 1..1024 workers");
    while (seed == 0) {
        if (::getrandom(&seed, sizeof seed, 0) != sizeof seed) return errno_error("bpf steering: getrandom");
    }
    route_libbpf_logs();
    steering_bpf* skel = steering_bpf__open();
    if (!skel) return errno_error("bpf steering: open skeleton");
    std::unique_ptr<Steering> s(new Steering(skel, workers, seed));
    // Read-only data must be set between open and load: load freezes .rodata, and the verifier then
    // treats n_workers and hash_seed as constants.
    skel->rodata->n_workers = static_cast<uint32_t>(workers);
    skel->rodata->hash_seed = seed;
    if (int err = bpf_map__set_max_entries(skel->maps.workers, static_cast<uint32_t>(workers)); err != 0)
        return make_error(err, "bpf steering: size the socket array");
    if (int err = steering_bpf__load(skel); err != 0)
        return make_error(err, "bpf steering: load (privileges: CAP_BPF or CAP_SYS_ADMIN; see debug log)");
    return s;
}

int Steering::prog_fd() const { return bpf_program__fd(skel_->progs.ztp_steering); }

Result<void> Steering::set_worker(size_t index, int fd) {
    if (index >= workers_) return make_error(EINVAL, "bpf steering: worker index out of range");
    const uint32_t key = static_cast<uint32_t>(index);
    // REUSEPORT_SOCKARRAY takes the socket's fd as the value (8 bytes here). The kernel refuses
    // sockets not in a reuseport group, not yet hashed (TCP: not listening) or from another group
    // than the array's other sockets, and drops the entry itself when the socket closes.
    const uint64_t value = static_cast<uint64_t>(fd);
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.workers), &key, &value, BPF_ANY) != 0)
        return errno_error("bpf steering: add socket to array (listening, SO_REUSEPORT, same group?)");
    return ok_result();
}

Result<void> Steering::attach(const std::vector<int>& group_fds) {
    if (group_fds.size() != workers_) return make_error(EINVAL, "bpf steering: one socket per worker");
    // Fill the array before attaching, so the first selections find their sockets (an empty slot
    // would only fall back to the kernel's hash, but spreading would not be as documented).
    for (size_t i = 0; i < group_fds.size(); ++i)
        if (auto r = set_worker(i, group_fds[i]); !r) return r;
    const int fd = prog_fd();
    // One socket suffices: the program belongs to the reuseport group, not the socket.
    if (::setsockopt(group_fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &fd, sizeof fd) != 0)
        return errno_error("setsockopt(SO_ATTACH_REUSEPORT_EBPF)");
    return ok_result();
}

size_t Steering::worker_for(const SocketAddress& peer) const {
    auto m = mapped_address(peer);
    if (!m) return 0;
    return ztp_steer_hash(m->data(), seed_) % workers_;
}

}  // namespace ztp::bpf
