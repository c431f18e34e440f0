#include "proxy/conn/record_path_relay.hpp"

#include <algorithm>

#include "crypto/record_layer.hpp"

namespace ztp::conn {

namespace {

core::DirectionConfig config_for(bool up, const RedactionStage& stage, size_t buffer, io::BufferPool& pool) {
    // A fresh chunk once the tail has less room than a whole record (or a quarter chunk).
    if (stage.rewrites())
        return {up, buffer, std::min(crypto::kRecordMaxPlaintext, buffer / 4), RecordPathRelay::kMaxChunks,
                RecordPathRelay::kMaxSegments, nullptr};
    const size_t size = std::min(buffer, pool.buffer_size());
    return {up, size, std::min(crypto::kRecordMaxPlaintext, size / 4), 1, RecordPathRelay::kMaxSegments, &pool};
}

}  // namespace

RecordPathRelay::RecordPathRelay(RelayHost& host, std::unique_ptr<crypto::RecordPath> path, int client_fd,
                                 int backend_fd, size_t buffer_size, RedactionStage up, RedactionStage down)
    : ending_(host),
      path_(std::move(path)),
      client_io_(host, client_fd, kClientIn, kClientOut),
      up_(host, ending_, counters_, config_for(true, up, buffer_size, host.buffers()), std::move(up), kUpQuiet),
      down_(host, ending_, counters_, config_for(false, down, buffer_size, host.buffers()), std::move(down),
            kDownQuiet),
      client_in_(up_, *path_, client_io_),
      backend_out_(host, up_, backend_fd, kBackendSend),
      backend_in_(host, down_, backend_fd, kBackendRecv, kBackendReadable),
      client_out_(down_, *path_, client_io_) {
    up_.attach(client_in_, backend_out_);
    down_.attach(backend_in_, client_out_);
}

void RecordPathRelay::start() {
    up_.kick();
    down_.kick();
}

void RecordPathRelay::on_completion(uint8_t tag, int res) {
    auto read = [this] {
        client_in_.readable();
        up_.kick();
    };
    if (client_io_.on_completion(tag, ending_.failed(), read, [this] { down_.kick(); })) return;
    if (backend_in_.on_completion(tag, res) || backend_out_.on_completion(tag, res)) return;
    if (tag == kUpQuiet) up_.on_quiet();
    if (tag == kDownQuiet) down_.on_quiet();
}

}  // namespace ztp::conn
