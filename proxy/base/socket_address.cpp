#include "proxy/base/socket_address.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace ztp {

namespace {
bool fail(std::string* why, const char* msg) {
    if (why) *why = msg;
    return false;
}

bool parse_port(std::string_view s, uint16_t& port, std::string* why) {
    if (s.empty()) return fail(why, "missing port");
    unsigned v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || v > 65535)
        return fail(why, "port must be a number from 0 to 65535");
    port = static_cast<uint16_t>(v);
    return true;
}
}  // namespace

std::optional<SocketAddress> SocketAddress::parse(std::string_view text, std::string* why) {
    SocketAddress a;
    std::string_view host, port_s;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos) {
            fail(why, "missing ']' in IPv6 address");
            return std::nullopt;
        }
        host = text.substr(1, close - 1);
        if (close + 1 >= text.size() || text[close + 1] != ':') {
            fail(why, "expected ':port' after IPv6 address");
            return std::nullopt;
        }
        port_s = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            fail(why, "expected host:port");
            return std::nullopt;
        }
        host = text.substr(0, colon);
        port_s = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) {
            fail(why, "IPv6 addresses must be written as [addr]:port");
            return std::nullopt;
        }
    }
    uint16_t port = 0;
    if (!parse_port(port_s, port, why)) return std::nullopt;

    std::string h(host);
    if (h == "*" || h.empty()) h = "0.0.0.0";
    if (h == "localhost") h = "127.0.0.1";
    auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage_);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage_);
    if (inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        a.len_ = sizeof(sockaddr_in);
        return a;
    }
    std::memset(&a.storage_, 0, sizeof(a.storage_));
    if (inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        a.len_ = sizeof(sockaddr_in6);
        return a;
    }
    fail(why, "not an IP address (host names are not resolved)");
    return std::nullopt;
}

SocketAddress SocketAddress::from_sockaddr(const sockaddr* sa, socklen_t len) {
    SocketAddress a;
    if (len > sizeof(a.storage_)) len = sizeof(a.storage_);
    std::memcpy(&a.storage_, sa, len);
    a.len_ = len;
    return a;
}

uint16_t SocketAddress::port() const {
    if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    return 0;
}

void SocketAddress::set_port(uint16_t port) {
    if (family() == AF_INET) reinterpret_cast<sockaddr_in*>(&storage_)->sin_port = htons(port);
    if (family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(&storage_)->sin6_port = htons(port);
}

std::string SocketAddress::ip_string() const {
    char buf[INET6_ADDRSTRLEN] = {};
    if (family() == AF_INET)
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
    else if (family() == AF_INET6)
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf, sizeof buf);
    else
        return "?";
    return buf;
}

std::string SocketAddress::to_string() const {
    if (family() == AF_INET6) return "[" + ip_string() + "]:" + std::to_string(port());
    return ip_string() + ":" + std::to_string(port());
}

bool SocketAddress::operator==(const SocketAddress& o) const {
    return len_ == o.len_ && std::memcmp(&storage_, &o.storage_, len_) == 0;
}

}  // namespace ztp
