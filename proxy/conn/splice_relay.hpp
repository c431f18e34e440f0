// SpliceRelay: the relay for the kernel record path. The kernel decrypts client records into
// the socket's receive queue and encrypts what we write, so plaintext can move socket → pipe →
// socket with io_uring SPLICE and never enter user space. Each direction owns one pipe from the
// worker's pool; the pipe's capacity is the direction's buffer bound (back-pressure).
//
// Control records on the client's kTLS RX socket make splice fail with EINVAL (the record stays
// queued): the relay then reads it with recvmsg and a cmsg buffer (KernelRecordPath), handles it
// (close_notify → half-close towards the backend, KeyUpdate → next RX key where the kernel can
// take one, and our own KeyUpdate before the next splice towards the client when asked for), and
// resumes splicing.
#pragma once

#include <memory>
#include <string>

#include "crypto/kernel_record_path.hpp"
#include "proxy/conn/relay.hpp"
#include "proxy/io/pipe_pool.hpp"
#include "proxy/io/pipe_spill.hpp"

namespace ztp::conn {

class SpliceRelay final : public Relay {
public:
    SpliceRelay(RelayHost& host, io::PipePool& pipes, std::unique_ptr<crypto::KernelRecordPath> path, int client_fd,
                int backend_fd);
    ~SpliceRelay() override;

    void start() override;
    void on_completion(uint8_t tag, int res) override;
    void say_goodbye() override;
    void cancel_own_io() override;
    const RelayCounters& counters() const override { return counters_; }
    const char* rx_path() const override { return "kernel"; }
    const char* tx_path() const override { return "kernel"; }

private:
    enum Tag : uint8_t { kUpFill = kFirstRelayTag, kUpDrain, kUpDrainPoll, kDownFill, kDownDrain, kDownDrainPoll,
                         kGoodbyePoll, kUpControlPoll };

    struct Direction {
        bool up;  // client → backend
        int src;
        int dst;
        io::Pipe pipe;
        size_t in_pipe = 0;
        bool fill_inflight = false;
        bool drain_inflight = false;
        bool src_eof = false;
        bool done = false;
        io::Op op_fill, op_drain, op_drain_poll;
    };

    void fill(Direction& d);
    bool push_spill(Direction& d);
    void drain(Direction& d);
    void wait_writable(Direction& d);
    void on_fill(Direction& d, int res);
    void on_drain(Direction& d, int res);
    void on_control_record(Direction& d);
    void wait_control_record(Direction& d);
    void finish(Direction& d);
    void fail(const char* reason, const std::string& detail);
    void bad_record(const std::string& detail);
    uint64_t& spliced(Direction& d) { return d.up ? counters_.spliced_up : counters_.spliced_down; }
    uint64_t& bytes(Direction& d) { return d.up ? counters_.bytes_up : counters_.bytes_down; }

    RelayHost& host_;
    io::PipePool& pool_;
    std::unique_ptr<crypto::KernelRecordPath> path_;
    Direction up_;
    Direction down_;
    io::Op op_goodbye_poll_;
    io::Op op_control_poll_;  // the next part of a handshake message split across records
    io::PipeSpill spill_;  // client → backend bytes that reached user space, not yet in the pipe
    uint64_t key_updates_seen_ = 0;
    bool failed_ = false;
    const char* first_close_ = nullptr;
    RelayCounters counters_;
};

}  // namespace ztp::conn
