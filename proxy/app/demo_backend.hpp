// DemoBackend: the small HTTP/1.1 server `ztproxy demo` puts behind the proxy, so the demo needs
// nothing but the binary. It answers GET / with an HTML page echoing the request line and headers
// (HTML-escaped), GET /health with "ok", and 404 otherwise. Keep-alive, pipelining, partial reads,
// vanishing clients and malformed requests (400) are handled; requests are size-bounded.
//
// One thread runs a poll() loop over the listener and up to kMaxConnections clients; the
// destructor wakes it (eventfd), joins it and closes every socket.
#pragma once

#include <memory>
#include <thread>

#include "proxy/base/result.hpp"
#include "proxy/base/socket_address.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::app {

class DemoBackend {
public:
    static constexpr size_t kMaxConnections = 256;

    // Binds 127.0.0.1:0 and starts serving on a background thread.
    static Result<std::unique_ptr<DemoBackend>> start();

    SocketAddress address() const { return address_; }

    ~DemoBackend();  // stops and joins
    DemoBackend(const DemoBackend&) = delete;
    DemoBackend& operator=(const DemoBackend&) = delete;

private:
    DemoBackend() = default;
    void run() noexcept;

    UniqueFd listen_fd_;
    UniqueFd wake_fd_;  // eventfd: written once by the destructor
    SocketAddress address_;
    std::thread thread_;
};

}  // namespace ztp::app
