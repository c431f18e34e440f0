#include "proxy/conn/splice_relay.hpp"

#include <fcntl.h>

#include "proxy/conn/client_records.hpp"

namespace ztp::conn {

SpliceRelay::SpliceRelay(RelayHost& host, io::PipePool& pipes, std::unique_ptr<crypto::KernelRecordPath> path,
                         int client_fd, int backend_fd)
    : backend_fd_(backend_fd),
      path_(std::move(path)),
      ending_(host),
      up_(host, ending_, counters_, *path_, pipes, true, client_fd, backend_fd, kClientReadable, kBackendWritable),
      down_(host, ending_, counters_, *path_, pipes, false, backend_fd, client_fd, kBackendReadable,
            kClientWritable) {
    up_.set_reverse(down_);
}

void SpliceRelay::start() {
    // Kernel contract: splice(2) between a socket and a pipe blocks on the socket unless the
    // socket's file is O_NONBLOCK (TCP splice-read and the sendpage/splice-write side take their
    // blocking mode from the file, not from SPLICE_F_NONBLOCK), and the event loop must never block.
    // The client was accepted non-blocking; the backend socket was blocking for io_uring's connect.
    ::fcntl(backend_fd_, F_SETFL, ::fcntl(backend_fd_, F_GETFL) | O_NONBLOCK);
    if (!up_.open() || !down_.open()) return;
    up_.kick();
    down_.kick();
}

void SpliceRelay::on_completion(uint8_t tag, int res) {
    if (!up_.on_completion(tag, res)) down_.on_completion(tag, res);
}

void SpliceRelay::say_goodbye() {
    if (down_.done() || ending_.failed()) return;
    // close_notify only behind the last byte: plaintext still in the pipe means the client must see
    // the truncation. (What the socket already took goes out ahead of the close_notify anyway.)
    if (down_.queued()) return note_truncated_close();
    path_->shutdown_write();
}

}  // namespace ztp::conn
