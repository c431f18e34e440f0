// RewriteRelay: routes with redaction rules on the OpenSSL and kernel record paths. Plaintext is
// read in chunks; each chunk is handed to the direction's RedactionStage by reference (never
// copied) and what comes out is a RewritePlan: spans of the untouched chunks plus replacement
// segments, sent with sendmsg towards the backend, or written through the record path towards
// the client (where the kernel or OpenSSL encrypts it). A direction without rules passes its
// chunks through the same plans. Bounded in chunks (io::ChunkArena): reads fill a chunk's tail, and
// a direction stops reading while kMaxChunks of its chunks are alive (in plans, held back, or being
// received into), so a flood of 1-byte records costs bytes, not a chunk per record.
#pragma once

#include <sys/socket.h>

#include <memory>

#include "crypto/record_path.hpp"
#include "proxy/conn/client_readiness.hpp"
#include "proxy/conn/redaction_stage.hpp"
#include "proxy/conn/relay.hpp"
#include "proxy/io/chunk_arena.hpp"

namespace ztp::conn {

class RewriteRelay final : public Relay {
public:
    // Chunks alive per direction before it stops reading: one being filled, the rest in flight or
    // held back.
    static constexpr size_t kMaxChunks = 4;
    // Plan segments queued per direction before it stops reading: each costs an iovec and a chunk
    // reference, whatever the bytes it carries (IOV_MAX: one sendmsg's worth).
    static constexpr size_t kMaxSegments = 1024;

    RewriteRelay(RelayHost& host, std::unique_ptr<crypto::RecordPath> path, int client_fd, int backend_fd,
                 size_t chunk_size, RedactionStage up, RedactionStage down);

    void start() override;
    void on_completion(uint8_t tag, int res) override;
    void say_goodbye() override;
    void cancel_own_io() override {}
    const RelayCounters& counters() const override { return counters_; }
    const char* rx_path() const override { return path_->rx_name(); }
    const char* tx_path() const override { return path_->tx_name(); }

private:
    enum Tag : uint8_t {
        kClientIn = kFirstRelayTag, kClientOut, kBackendRecv, kBackendSend, kUpQuiet, kDownQuiet
    };

    void pump_client_read();
    void pump_backend_send();
    void on_backend_send(int res);
    void pump_backend_recv();
    void on_backend_recv(int res);
    void pump_client_write();
    void on_quiet(bool up);
    void fail_io(const crypto::IoResult& r);
    void fail(const char* reason, const std::string& detail);
    void maybe_finished();
    static size_t segments(const redact::RewritePlan& p) { return p.iovecs().size(); }

    RelayHost& host_;
    std::unique_ptr<crypto::RecordPath> path_;
    int client_;
    int backend_;
    RedactionStage up_stage_;
    RedactionStage down_stage_;
    bool failed_ = false;
    const char* first_close_ = nullptr;
    RelayCounters counters_;
    uint64_t key_updates_seen_ = 0;

    ClientReadiness client_io_;
    io::Op op_recv_, op_send_;
    QuietTimer up_quiet_, down_quiet_;

    // client → backend
    redact::RewritePlan up_filling_, up_sending_;
    msghdr up_msg_{};
    bool send_inflight_ = false;
    bool up_eof_ = false, up_finished_ = false, up_done_ = false;
    uint64_t up_feeds_ = 0;

    // backend → client
    io::ChunkArena up_chunks_, down_chunks_;
    std::shared_ptr<const void> down_recv_lease_;  // the chunk the backend receive writes into
    redact::RewritePlan down_filling_, down_writing_;
    bool recv_inflight_ = false;
    bool down_eof_ = false, down_finished_ = false, down_done_ = false;
    uint64_t down_feeds_ = 0;
};

}  // namespace ztp::conn
