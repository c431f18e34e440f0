#include "proxy/conn/proxy_header.hpp"

#include <netinet/in.h>

#include <cstring>
#include <string_view>

namespace ztp::conn::pp2 {

namespace {

// An address as the header carries it: raw bytes in network order, and the port.
struct WireAddress {
    uint8_t bytes[16]{};
    size_t size = 0;  // 4 or 16
    uint16_t port = 0;
};

WireAddress wire(const SocketAddress& a, bool as_ipv4) {
    WireAddress w;
    w.port = a.port();
    if (a.family() == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(a.sa());
        std::memcpy(w.bytes, &in->sin_addr, 4);
        w.size = 4;
    } else {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(a.sa());
        // ::ffff:a.b.c.d keeps its IPv4 address in the last four bytes.
        std::memcpy(w.bytes, as_ipv4 ? in6->sin6_addr.s6_addr + 12 : in6->sin6_addr.s6_addr, as_ipv4 ? 4 : 16);
        w.size = as_ipv4 ? 4 : 16;
    }
    return w;
}

bool v4_mapped(const SocketAddress& a) {
    return a.family() == AF_INET6 &&
           IN6_IS_ADDR_V4MAPPED(&reinterpret_cast<const sockaddr_in6*>(a.sa())->sin6_addr);
}

class Writer {
public:
    explicit Writer(std::vector<uint8_t>& out) : out_(out) {}

    void u8(uint8_t v) { out_.push_back(v); }
    void u16(uint16_t v) {
        u8(static_cast<uint8_t>(v >> 8));
        u8(static_cast<uint8_t>(v));
    }
    void u32(uint32_t v) {
        u16(static_cast<uint16_t>(v >> 16));
        u16(static_cast<uint16_t>(v));
    }
    void bytes(const void* p, size_t n) {
        const auto* b = static_cast<const uint8_t*>(p);
        out_.insert(out_.end(), b, b + n);
    }

    // Type, then a length patched by close(): returns where the length goes.
    size_t open(uint8_t type) {
        u8(type);
        size_t at = out_.size();
        u16(0);
        return at;
    }
    // False when the value grew past what 16 bits can say.
    bool close(size_t at) { return patch(at, out_.size() - at - 2); }
    bool patch(size_t at, size_t value) {
        if (value > 0xFFFF) return false;
        out_[at] = static_cast<uint8_t>(value >> 8);
        out_[at + 1] = static_cast<uint8_t>(value);
        return true;
    }
    bool tlv(uint8_t type, std::string_view value) {
        size_t at = open(type);
        bytes(value.data(), value.size());
        return close(at);
    }
    // A TLV only when there is something to say.
    bool optional_tlv(uint8_t type, std::string_view value) { return value.empty() || tlv(type, value); }

private:
    std::vector<uint8_t>& out_;
};

}  // namespace

Result<std::vector<uint8_t>> encode(const SocketAddress& source, const SocketAddress& destination,
                                    const crypto::SessionInfo& session) {
    const bool both_v4 = (source.family() == AF_INET && destination.family() == AF_INET) ||
                         (v4_mapped(source) && v4_mapped(destination));
    const bool both_v6 = source.family() == AF_INET6 && destination.family() == AF_INET6 && !both_v4;
    if (!both_v4 && !both_v6)
        return make_error(EAFNOSUPPORT, "PROXY v2 header: client and listener address families differ");
    const WireAddress src = wire(source, both_v4);
    const WireAddress dst = wire(destination, both_v4);

    std::vector<uint8_t> out;
    out.reserve(256);
    Writer w(out);
    w.bytes(kSignature, sizeof kSignature);
    w.u8(kVersion2Proxy);
    w.u8(both_v4 ? kTcpIpv4 : kTcpIpv6);
    const size_t length_at = out.size();
    w.u16(0);
    w.bytes(src.bytes, src.size);
    w.bytes(dst.bytes, dst.size);
    w.u16(src.port);
    w.u16(dst.port);

    const crypto::ClientCertInfo& cert = session.client_cert;
    bool fits = w.optional_tlv(kTypeAlpn, session.alpn) && w.optional_tlv(kTypeAuthority, session.sni);
    const size_t ssl_at = w.open(kTypeSsl);
    uint8_t client = kClientSsl;
    if (cert.presented) client |= kClientCertSess;
    if (cert.presented && cert.this_connection) client |= kClientCertConn;
    w.u8(client);
    w.u32(cert.presented ? static_cast<uint32_t>(cert.verify_result) : kVerifyNoCertificate);
    fits = fits && w.optional_tlv(kSubtypeSslVersion, session.version) &&
           (!cert.presented || w.optional_tlv(kSubtypeSslCn, cert.common_name)) &&
           w.optional_tlv(kSubtypeSslCipher, session.cipher) && w.close(ssl_at);
    fits = fits && (!cert.presented || w.optional_tlv(kTypeClientSubject, cert.subject));
    if (!fits || !w.patch(length_at, out.size() - kFixedSize))
        return make_error(EMSGSIZE, "PROXY v2 header: longer than 16-bit lengths allow");
    return out;
}

}  // namespace ztp::conn::pp2
