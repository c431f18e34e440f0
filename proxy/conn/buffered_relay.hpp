// BufferedRelay: plaintext through one bounded buffer per direction. The client side is driven
// by readiness (io_uring POLL_ADD) because the record path does its own socket I/O; the backend
// side uses io_uring RECV/SEND. A full buffer stops its reader (back-pressure), so a slow peer
// never makes the proxy buffer without limit.
#pragma once

#include <memory>

#include "crypto/record_path.hpp"
#include "proxy/conn/client_readiness.hpp"
#include "proxy/conn/relay.hpp"

namespace ztp::conn {

class BufferedRelay final : public Relay {
public:
    BufferedRelay(RelayHost& host, std::unique_ptr<crypto::RecordPath> path, int client_fd, int backend_fd,
                  size_t buffer_size);

    void start() override;
    void on_completion(uint8_t tag, int res) override;
    void say_goodbye() override;
    void cancel_own_io() override {}
    const RelayCounters& counters() const override { return counters_; }
    const char* rx_path() const override { return path_->rx_name(); }
    const char* tx_path() const override { return path_->tx_name(); }

private:
    enum Tag : uint8_t { kClientIn = kFirstRelayTag, kClientOut, kBackendRecv, kBackendSend, kBackendReadable };

    void pump_client_read();    // client → up buffer
    void pump_backend_send();   // up buffer → backend
    void pump_backend_recv();   // backend → down buffer
    void pump_client_write();   // down buffer → client
    void on_backend_send(int res);
    void on_backend_recv(int res);
    void maybe_finished();
    void fail(const crypto::IoResult& r);

    RelayHost& host_;
    std::unique_ptr<crypto::RecordPath> path_;
    int client_;
    int backend_;
    size_t buf_size_;
    bool failed_ = false;

    ClientReadiness client_io_;
    io::Op op_recv_;
    io::Op op_send_;
    io::Op op_backend_readable_;
    // Idle connections hold no buffer: a direction's buffer exists only while it holds bytes or
    // data keeps coming (a read that filled the free space means more is likely queued).
    bool backend_readable_ = false;
    bool backend_poll_inflight_ = false;
    size_t last_recv_size_ = 0;
    bool recv_inflight_ = false;
    bool send_inflight_ = false;

    // client → backend
    io::BufferLease up_buf_;
    size_t up_len_ = 0, up_off_ = 0;
    bool up_eof_ = false;   // the client finished sending
    bool up_done_ = false;  // and the backend got our FIN
    // backend → client
    io::BufferLease down_buf_;
    size_t down_len_ = 0, down_off_ = 0;
    bool down_eof_ = false;   // the backend finished sending
    bool down_done_ = false;  // and the client got our close_notify

    const char* first_close_ = nullptr;  // who ended first: client_close / backend_close
    RelayCounters counters_;
};

}  // namespace ztp::conn
