// Connection: one client TLS connection and its backend connection, from accept to teardown.
//
//   handshaking → connecting → relaying → closing (→ freed once no op is in flight)
//
// The client side is driven by readiness (io_uring POLL_ADD) because the record path (OpenSSL
// here) does the socket I/O itself; the backend side uses io_uring RECV/SEND/CONNECT directly.
// Each direction has one bounded buffer: when it is full the reader stops (back-pressure), so a
// slow peer never makes the proxy buffer without limit.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "crypto/handshake.hpp"
#include "crypto/record_path.hpp"
#include "proxy/base/c_deleters.hpp"
#include "proxy/base/socket_address.hpp"
#include "proxy/base/unique_fd.hpp"
#include "proxy/conn/access_log.hpp"
#include "proxy/conn/runtime.hpp"
#include "proxy/io/event_loop.hpp"

namespace ztp::conn {

using Clock = std::chrono::steady_clock;

class ConnectionOwner {
public:
    virtual io::EventLoop& loop() = 0;
    virtual void connection_finished(class Connection* c) = 0;  // free it after this dispatch

protected:
    ~ConnectionOwner() = default;
};

class Connection final : public io::CompletionHandler {
public:
    Connection(ConnectionOwner& owner, std::shared_ptr<const Runtime> runtime, const ListenerRuntime& listener,
               UniqueFd client, SocketAddress peer);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    void start();
    void on_completion(uint8_t tag, int res, uint32_t flags) override;
    // Called by the worker's tick: closes the connection if a handshake or idle deadline passed.
    void check_deadlines(Clock::time_point now);
    // Ends the connection now (shutdown of the proxy): close_notify best effort, then teardown.
    void abort(const char* reason);

private:
    enum Tag : uint8_t { kClientIn, kClientOut, kBackendConnect, kBackendRecv, kBackendSend };
    enum class Phase { handshaking, connecting, relaying, closing };

    void continue_handshake();
    void handshake_done();
    void connect_next_backend();
    void on_connected(int res);
    void start_relay();

    void pump_client_read();    // client → up buffer
    void pump_backend_send();   // up buffer → backend
    void pump_backend_recv();   // backend → down buffer
    void pump_client_write();   // down buffer → client
    void on_backend_send(int res);
    void on_backend_recv(int res);
    void maybe_finish_directions();

    void arm_client(Tag tag);
    void fail(const char* reason, const std::string& detail = {});
    void close(const char* reason);
    void release_if_idle();
    void op_done() { --inflight_; }
    void touch() { last_activity_ = Clock::now(); }

    ConnectionOwner& owner_;
    std::shared_ptr<const Runtime> runtime_;
    const ListenerRuntime& listener_;
    UniqueFd client_;
    UniqueFd backend_;
    SocketAddress peer_;
    SocketAddress backend_addr_;
    SslPtr ssl_;
    std::unique_ptr<crypto::RecordPath> path_;
    crypto::SessionInfo session_;

    Phase phase_ = Phase::handshaking;
    Clock::time_point started_;
    Clock::time_point last_activity_;
    const BackendRuntime* backend_cfg_ = nullptr;
    size_t connect_attempts_ = 0;
    uint32_t rotation_start_ = 0;
    std::string last_connect_error_;
    __kernel_timespec connect_timeout_{};

    io::Op op_client_in_{this, kClientIn};
    io::Op op_client_out_{this, kClientOut};
    io::Op op_connect_{this, kBackendConnect};
    io::Op op_recv_{this, kBackendRecv};
    io::Op op_send_{this, kBackendSend};
    int inflight_ = 0;
    bool client_in_armed_ = false;
    bool client_out_armed_ = false;
    bool recv_inflight_ = false;
    bool send_inflight_ = false;
    bool reader_waits_for_write_ = false;  // the record path asked to write before it can read
    bool writer_waits_for_read_ = false;   // and vice versa (e.g. TLS 1.3 KeyUpdate handling)
    bool released_ = false;

    // client → backend
    std::unique_ptr<std::byte[]> up_buf_;
    size_t up_len_ = 0, up_off_ = 0;
    bool up_eof_ = false;      // the client finished sending
    bool up_done_ = false;     // and the backend got our FIN
    // backend → client
    std::unique_ptr<std::byte[]> down_buf_;
    size_t down_len_ = 0, down_off_ = 0;
    bool down_eof_ = false;    // the backend finished sending
    bool down_done_ = false;   // and the client got our close_notify
    size_t buf_size_ = 0;

    const char* first_close_ = nullptr;  // who ended first: client_close / backend_close
    std::string close_reason_;
    uint64_t bytes_up_ = 0, bytes_down_ = 0;
};

}  // namespace ztp::conn
