// A fake completion queue for the relay core: an io::Submitter that keeps every submitted operation
// pending until the test completes it, in any order and in any way the kernel could: a recv with
// fewer bytes than asked for, a short send, a poll that fires, a cancellation. It also checks the
// kernel contract from the kernel's side:
//   * the memory of a pending send is the kernel's to read at any moment until its completion: a
//     send whose bytes changed between submission and completion is reported (something wrote into
//     leased memory, or it went back to a pool and was reused);
//   * a receive may not be posted into memory a pending send still reads, nor a send out of memory
//     a pending receive may still write.
#pragma once

#include <linux/time_types.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "proxy/io/event_loop.hpp"
#include "proxy/io/submitter.hpp"

namespace ztp::testing {

class FakeRing final : public io::Submitter {
public:
    enum class Kind { poll, recv, send, timeout };

    struct Pending {
        uint64_t id = 0;
        io::Op* op = nullptr;
        Kind kind = Kind::poll;
        int fd = -1;             // poll/recv/send: the socket
        unsigned events = 0;     // poll: POLLIN / POLLOUT
        size_t len = 0;
        std::vector<iovec> mem;  // recv: where the kernel writes; send: what it reads
        std::string snapshot;    // send: the bytes at submission
        bool cancelled = false;
    };

    // ---- io::Submitter
    void poll(io::Op* op, int fd, unsigned events) override {
        Pending p = make(op, Kind::poll, fd);
        p.events = events;
        add(std::move(p));
    }
    void recv(io::Op* op, int fd, void* buf, size_t len) override {
        add_recv(op, fd, {iovec{buf, len}});
    }
    void send(io::Op* op, int fd, const void* buf, size_t len) override {
        add_send(op, fd, {iovec{const_cast<void*>(buf), len}});
    }
    void sendmsg(io::Op* op, int fd, const msghdr* msg) override {
        add_send(op, fd, {msg->msg_iov, msg->msg_iov + msg->msg_iovlen});
    }
    void recvmsg(io::Op* op, int fd, msghdr* msg) override {
        add_recv(op, fd, {msg->msg_iov, msg->msg_iov + msg->msg_iovlen});
    }
    long recv_now(int fd, void* buf, size_t len) override {
        check_not_read_by_a_send(buf, len, next_id_);
        return on_recv_now ? on_recv_now(fd, buf, len) : -EAGAIN;
    }
    long splice_now(int in, int out, size_t len) override {
        ++splices_now_;
        return on_splice_now ? on_splice_now(in, out, len) : -EAGAIN;
    }
    void timeout(io::Op* op, __kernel_timespec*) override { add(make(op, Kind::timeout, -1)); }
    void cancel_fd(int fd) override {
        for (auto& p : pending_)
            if (p.fd == fd) p.cancelled = true;
    }

    // ---- the test's side
    // What a synchronous recv_now() finds on `fd` (the test's peers); unset: -EAGAIN.
    std::function<long(int fd, void* buf, size_t len)> on_recv_now;
    // What a synchronous splice_now() does (the test's pipes and peers); unset: -EAGAIN.
    std::function<long(int in, int out, size_t len)> on_splice_now;
    size_t splices_now() const { return splices_now_; }
    const std::vector<Pending>& pending() const { return pending_; }
    std::vector<std::string>& violations() { return violations_; }
    size_t submitted() const { return next_id_; }

    // The index of the oldest pending op of `kind` on `fd`, or -1.
    int find(int fd, Kind kind) const {
        for (size_t i = 0; i < pending_.size(); ++i)
            if (pending_[i].fd == fd && pending_[i].kind == kind) return static_cast<int>(i);
        return -1;
    }

    // Completes pending op `i` with `res` (it leaves the queue first: the handler may submit more).
    void complete(size_t i, int res) {
        Pending p = pending_.at(i);
        pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
        p.op->handler->on_completion(p.op->tag, res, 0);
    }

    // A receive that got `bytes` (at most what it asked for; empty = the peer's FIN).
    void complete_recv(size_t i, const std::string& bytes) {
        Pending& p = pending_.at(i);
        size_t off = 0;
        for (const iovec& v : p.mem) {
            size_t n = std::min(v.iov_len, bytes.size() - off);
            check_not_read_by_a_send(v.iov_base, n, p.id);
            std::memcpy(v.iov_base, bytes.data() + off, n);
            off += n;
            if (off == bytes.size()) break;
        }
        complete(i, static_cast<int>(off));
    }

    // A send that took its first `n` bytes (a short send when n is less than it offered): they are
    // appended to `wire`, as read from the op's memory now, and compared with the submission.
    void complete_send(size_t i, size_t n, std::string& wire) {
        Pending& p = pending_.at(i);
        std::string now = gather(p.mem, n);
        if (now != p.snapshot.substr(0, n))
            violations_.push_back("send #" + std::to_string(p.id) + " on fd " + std::to_string(p.fd) +
                                  ": its memory changed while the send was in flight");
        wire += now;
        complete(i, static_cast<int>(n));
    }

    static size_t total(const std::vector<iovec>& mem) {
        size_t n = 0;
        for (const iovec& v : mem) n += v.iov_len;
        return n;
    }

private:
    static Pending make(io::Op* op, Kind kind, int fd, size_t len = 0) {
        Pending p;
        p.op = op;
        p.kind = kind;
        p.fd = fd;
        p.len = len;
        return p;
    }
    void add(Pending p) {
        p.id = next_id_++;
        pending_.push_back(std::move(p));
    }
    void add_recv(io::Op* op, int fd, std::vector<iovec> mem) {
        for (const iovec& v : mem) check_not_read_by_a_send(v.iov_base, v.iov_len, next_id_);
        Pending p = make(op, Kind::recv, fd, total(mem));
        p.mem = std::move(mem);
        add(std::move(p));
    }
    void add_send(io::Op* op, int fd, std::vector<iovec> mem) {
        for (const auto& q : pending_)
            if (q.kind == Kind::recv)
                for (const iovec& v : mem)
                    if (overlaps(q.mem, v.iov_base, v.iov_len))
                        violations_.push_back("send #" + std::to_string(next_id_) +
                                              " reads memory a pending receive may write");
        Pending p = make(op, Kind::send, fd, total(mem));
        p.snapshot = gather(mem, p.len);
        p.mem = std::move(mem);
        add(std::move(p));
    }
    void check_not_read_by_a_send(const void* at, size_t len, uint64_t by) {
        for (const auto& q : pending_)
            if (q.kind == Kind::send && q.id != by && overlaps(q.mem, at, len))
                violations_.push_back("op #" + std::to_string(by) + " writes into memory pending send #" +
                                      std::to_string(q.id) + " still reads");
    }
    static bool overlaps(const std::vector<iovec>& mem, const void* at, size_t len) {
        auto a = reinterpret_cast<uintptr_t>(at);
        for (const iovec& v : mem) {
            auto b = reinterpret_cast<uintptr_t>(v.iov_base);
            if (len > 0 && v.iov_len > 0 && a < b + v.iov_len && b < a + len) return true;
        }
        return false;
    }
    static std::string gather(const std::vector<iovec>& mem, size_t n) {
        std::string out;
        for (const iovec& v : mem) {
            size_t k = std::min(v.iov_len, n - out.size());
            out.append(static_cast<const char*>(v.iov_base), k);
            if (out.size() == n) break;
        }
        return out;
    }

    std::vector<Pending> pending_;
    std::vector<std::string> violations_;
    uint64_t next_id_ = 0;
    size_t splices_now_ = 0;
};

}  // namespace ztp::testing
