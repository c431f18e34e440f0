// Connection: one client TLS connection and its backend connection, from accept to teardown.
//
//   handshaking → connecting (→ PROXY v2 header) → relaying → closing (→ freed once no op is in flight)
//
// The handshake is driven by readiness (io_uring POLL_ADD) on the non-blocking client socket.
// After it, the record crypto moves to the kernel when the listener allows it and the kernel and
// cipher can take it (else the OpenSSL path, counted with the reason), the backend is connected
// (round-robin, next address on failure) and a Relay moves the plaintext.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "crypto/handshake.hpp"
#include "crypto/kernel_record_path.hpp"
#include "crypto/record_layer.hpp"
#include "crypto/record_path.hpp"
#include "proxy/base/c_deleters.hpp"
#include "proxy/base/socket_address.hpp"
#include "proxy/base/unique_fd.hpp"
#include "proxy/conn/relay.hpp"
#include "proxy/conn/runtime.hpp"
#include "proxy/conn/source_limit.hpp"
#include "proxy/io/event_loop.hpp"
#include "proxy/io/gated_pool.hpp"
#include "proxy/io/pipe_pool.hpp"

namespace ztp::conn {

using Clock = std::chrono::steady_clock;

class ConnectionOwner {
public:
    virtual io::EventLoop& loop() = 0;
    virtual io::PipePool& pipes() = 0;
    virtual io::GatedPools gated_pools() = 0;
    virtual redact::Scratch& redact_scratch() = 0;
    virtual io::BufferPool& buffers() = 0;
    virtual void connection_finished(class Connection* c) = 0;  // free it after this dispatch
    virtual unsigned worker_id() const = 0;

protected:
    ~ConnectionOwner() = default;
};

class Connection final : public io::CompletionHandler, private RelayHost {
public:
    // `source`: the connection's place under max_connections_per_source, held until it is freed.
    Connection(ConnectionOwner& owner, std::shared_ptr<const Runtime> runtime, const ListenerRuntime& listener,
               UniqueFd client, SocketAddress peer, SourceLimit::Slot source = {});
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
    enum Tag : uint8_t { kClientIn, kClientOut, kBackendConnect, kBackendHeader };
    enum class Phase { handshaking, connecting, relaying, closing };

    void continue_handshake();
    void client_cert_rejected(const crypto::ClientCertRejection& rejection);
    void handshake_done();
    void choose_record_path();
    void note_fallback(crypto::KtlsFallback reason, const std::string& detail);
    config::TlsVersion session_version() const;
    void goodbye_before_relay();
    void connect_next_backend();
    void on_connected(int res);
    void send_proxy_header();
    void send_proxy_header_rest();
    void on_proxy_header_sent(int res);
    void proxy_header_failed(const std::string& detail);
    void start_relay();
    void arm_client(Tag tag);
    void close(const char* reason);
    void release_if_idle();
    void discard_unread_client_bytes();

    // RelayHost
    io::Submitter& loop() override { return owner_.loop(); }
    io::CompletionHandler& completion_target() override { return *this; }
    io::BufferPool& buffers() override { return owner_.buffers(); }
    void op_submitted() override { ++inflight_; }
    void activity() override { last_activity_ = Clock::now(); }
    void relay_finished(const char* reason) override { close(reason); }
    void relay_failed(const char* reason, const std::string& detail) override;

    ConnectionOwner& owner_;
    std::shared_ptr<const Runtime> runtime_;
    const ListenerRuntime& listener_;
    UniqueFd client_;
    UniqueFd backend_;
    SocketAddress peer_;
    SourceLimit::Slot source_;  // released with the connection
    Clock::time_point connect_started_{};  // the current backend connect attempt
    SocketAddress backend_addr_;
    SslPtr ssl_;  // until the records leave OpenSSL (kernel or userspace path): then freed
    crypto::CachedSession cached_session_;
    crypto::SessionInfo session_;
    // The record path, until the relay takes it: kernel_ when kTLS took the session, else path_.
    std::unique_ptr<crypto::KernelRecordPath> kernel_;
    std::unique_ptr<crypto::RecordPath> path_;
    struct UserspaceKeys {  // our own record layer took the session
        crypto::RecordReader reader;
        crypto::RecordWriter writer;
        config::TlsVersion version;
    };
    std::optional<UserspaceKeys> userspace_;
    std::string ktls_fallback_;                 // why not, when the listener allowed it
    std::string client_cert_error_;             // why the client certificate was refused
    std::vector<uint8_t> proxy_header_;         // PROXY v2 header for the backend, while it is sent
    size_t proxy_header_sent_ = 0;
    std::unique_ptr<Relay> relay_;

    Phase phase_ = Phase::handshaking;
    Clock::time_point started_;
    Clock::time_point last_activity_;
    const BackendRuntime* backend_cfg_ = nullptr;
    size_t connect_attempts_ = 0;
    uint32_t rotation_start_ = 0;
    size_t route_index_ = 0;
    std::string last_connect_error_;
    bool last_connect_timed_out_ = false;  // the last attempt ended at backend_connect_timeout
    __kernel_timespec connect_timeout_{};

    io::Op op_client_in_{this, kClientIn};
    io::Op op_client_out_{this, kClientOut};
    io::Op op_connect_{this, kBackendConnect};
    io::Op op_proxy_header_{this, kBackendHeader};
    int inflight_ = 0;
    bool client_in_armed_ = false;
    bool client_out_armed_ = false;
    bool released_ = false;
    std::string close_reason_;
};

}  // namespace ztp::conn
