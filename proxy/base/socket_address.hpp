// SocketAddress: an IPv4 or IPv6 address with port, parsed from "host:port" / "[v6]:port".
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <optional>
#include <string>
#include <string_view>

namespace ztp {

class SocketAddress {
public:
    SocketAddress() = default;
    // Accepts "1.2.3.4:443", "[::1]:443", "*:443" (all IPv4), "localhost:443". No DNS lookups:
    // a proxy that resolves names at start-up surprises operators when DNS changes.
    static std::optional<SocketAddress> parse(std::string_view text, std::string* why = nullptr);
    static SocketAddress from_sockaddr(const sockaddr* sa, socklen_t len);

    const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage_); }
    sockaddr* sa() { return reinterpret_cast<sockaddr*>(&storage_); }
    socklen_t len() const { return len_; }
    int family() const { return storage_.ss_family; }
    uint16_t port() const;
    void set_port(uint16_t port);
    std::string ip_string() const;
    std::string to_string() const;  // "1.2.3.4:443" or "[::1]:443"

    bool operator==(const SocketAddress& o) const;

private:
    sockaddr_storage storage_{};
    socklen_t len_ = 0;
};

}  // namespace ztp
