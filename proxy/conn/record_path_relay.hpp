// RecordPathRelay: the relay core (relay_core/direction.hpp) between a client record path that
// does its own socket I/O (OpenSSL; the kernel path on rule routes, which cannot be spliced) and the
// backend socket:
//   client → backend   PathSource → stage → BackendSink (sendmsg of the plan)
//   backend → client   BackendSource → stage → PathSink (record-path writes; close_notify last)
// A direction with redaction rules reads into heap chunks of `connection_buffer` (kMaxChunks of
// them: held-back bytes may pin a chunk for as long as the peer pauses); a direction without rules
// passes its chunks through the same plans, one pooled buffer at a time (the worker's warm pages,
// given back whenever the direction is idle).
#pragma once

#include <memory>

#include "crypto/record_path.hpp"
#include "proxy/conn/client_readiness.hpp"
#include "proxy/conn/relay_core/direction.hpp"
#include "proxy/conn/relay_core/ends.hpp"

namespace ztp::conn {

class RecordPathRelay final : public Relay {
public:
    // Chunks alive per direction with rules before it stops reading: one being filled, the rest in
    // flight or held back.
    static constexpr size_t kMaxChunks = 4;
    // Plan segments queued per direction before it stops reading: each costs an iovec and a chunk
    // reference, whatever the bytes it carries (IOV_MAX: one sendmsg's worth).
    static constexpr size_t kMaxSegments = 1024;

    RecordPathRelay(RelayHost& host, std::unique_ptr<crypto::RecordPath> path, int client_fd, int backend_fd,
                    size_t buffer_size, RedactionStage up, RedactionStage down);

    void start() override;
    void on_completion(uint8_t tag, int res) override;
    void say_goodbye() override { down_.say_goodbye(); }
    void cancel_own_io() override {}
    const RelayCounters& counters() const override { return counters_; }
    const char* rx_path() const override { return path_->rx_name(); }
    const char* tx_path() const override { return path_->tx_name(); }

private:
    enum Tag : uint8_t {
        kClientIn = kFirstRelayTag, kClientOut, kBackendRecv, kBackendReadable, kBackendSend, kUpQuiet, kDownQuiet
    };

    RelayCounters counters_;
    core::Ending ending_;
    std::unique_ptr<crypto::RecordPath> path_;
    ClientReadiness client_io_;
    core::Direction up_, down_;
    core::PathSource client_in_;
    core::BackendSink backend_out_;
    core::BackendSource backend_in_;
    core::PathSink client_out_;
};

}  // namespace ztp::conn
