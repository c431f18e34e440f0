#include "proxy/conn/userspace_relay.hpp"

#include <algorithm>

namespace ztp::conn {

namespace {

// Records per batch towards the client. The slots live in the worker's pooled buffers, whose size
// was fixed when the worker started (a reload may have changed the configured size). Plain routes
// seal a batch of at least kBatchRecords per recvmsg/sendmsg pair; rule routes keep the configured
// size (their backend bytes go through separately allocated chunks).
size_t record_slots(RelayHost& host, size_t buffer_size, bool rewrites) {
    const size_t batch = rewrites ? buffer_size
                                  : std::max(buffer_size, UserspaceRelay::kBatchRecords * crypto::kRecordMaxPlaintext);
    return std::clamp<size_t>(batch / crypto::kRecordMaxPlaintext, 1, host.buffers().buffer_size() / crypto::kRecordMaxSize);
}

}  // namespace

UserspaceRelay::UserspaceRelay(RelayHost& host, io::GatedPools pools, crypto::RecordReader reader,
                               crypto::RecordWriter writer, config::TlsVersion version, int client_fd,
                               int backend_fd, size_t buffer_size, RedactionStage up, RedactionStage down)
    : record_slots_(record_slots(host, buffer_size, down.rewrites())),
      ending_(host),
      // The direction's one chunk is the small buffer small verified batches are copied into.
      up_(host, ending_, counters_,
          core::DirectionConfig{true, kSmallBuffer, core::GatedSource::kCopyBelow, 1, kMaxSegments, nullptr},
          std::move(up), kUpQuiet),
      // Rule routes towards the client: chunks of one batch; held-back bytes pin at most a few. Plain
      // routes receive into the sink's record slots and use no chunk.
      down_(host, ending_, counters_,
            core::DirectionConfig{false, record_slots_ * crypto::kRecordMaxPlaintext,
                                  crypto::kRecordMaxPlaintext, kMaxDownChunks, kMaxSegments, nullptr},
            std::move(down), kDownQuiet),
      client_out_(host, down_, std::move(writer), client_fd, record_slots_,
                  kClientSend),
      client_in_(host, up_, client_out_, pools, std::move(reader), version, client_fd,
                 {kClientRecv, kClientReadable, kSlotFree}),
      backend_out_(host, up_, backend_fd, kBackendSend) {
    up_.attach(client_in_, backend_out_);
    if (down_.rewrites()) {
        down_.attach(chunks_in_.emplace(host, down_, backend_fd, kBackendRecv, kBackendReadable), client_out_);
    } else {
        down_.attach(slots_in_.emplace(host, down_, client_out_, backend_fd, kBackendRecv, kBackendReadable),
                     client_out_);
    }
}

void UserspaceRelay::start() {
    up_.kick();
    down_.kick();
}

void UserspaceRelay::on_completion(uint8_t tag, int res) {
    if (client_in_.on_completion(tag, res) || client_out_.on_completion(tag, res)) return;
    if (backend_out_.on_completion(tag, res)) return;
    if (slots_in_ ? slots_in_->on_completion(tag, res) : chunks_in_->on_completion(tag, res)) return;
    if (tag == kUpQuiet) up_.on_quiet();
    if (tag == kDownQuiet) down_.on_quiet();
}

}  // namespace ztp::conn
