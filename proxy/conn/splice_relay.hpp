// SpliceRelay: the relay for the kernel record path's plain routes. The kernel decrypts client
// records into the socket's receive queue and encrypts what we write, so plaintext moves socket →
// pipe → socket by splice and never enters user space. Each direction is a core::PipeDirection
// (relay_core/pipe_direction.hpp) on the relay core's Ending: its pipe from the worker's pool is
// its only buffer and its bound (back-pressure), and it splices with non-blocking splice(2) from
// the event loop when its socket is ready, so only polls are ever in flight.
//
// Control records on the client's kTLS RX socket make splice fail with EINVAL (the record stays
// queued): the up direction then reads it with recvmsg and a cmsg buffer (KernelRecordPath):
// close_notify → half-close towards the backend, KeyUpdate → next RX key where the kernel can take
// one, and our own KeyUpdate before the next splice towards the client when asked for.
#pragma once

#include <memory>

#include "crypto/kernel_record_path.hpp"
#include "proxy/conn/relay.hpp"
#include "proxy/conn/relay_core/direction.hpp"
#include "proxy/conn/relay_core/pipe_direction.hpp"
#include "proxy/io/pipe_pool.hpp"

namespace ztp::conn {

class SpliceRelay final : public Relay {
public:
    SpliceRelay(RelayHost& host, io::PipePool& pipes, std::unique_ptr<crypto::KernelRecordPath> path, int client_fd,
                int backend_fd);

    void start() override;
    void on_completion(uint8_t tag, int res) override;
    void say_goodbye() override;
    // Only polls on the sockets are ever in flight (splices are synchronous), and the connection
    // cancels those.
    void cancel_own_io() override {}
    const RelayCounters& counters() const override { return counters_; }
    const char* rx_path() const override { return "kernel"; }
    const char* tx_path() const override { return "kernel"; }

private:
    enum Tag : uint8_t { kClientReadable = kFirstRelayTag, kBackendWritable, kBackendReadable, kClientWritable };

    int backend_fd_;
    std::unique_ptr<crypto::KernelRecordPath> path_;
    RelayCounters counters_;
    core::Ending ending_;
    core::PipeDirection up_, down_;
};

}  // namespace ztp::conn
