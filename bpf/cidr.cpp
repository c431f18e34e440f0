#include "bpf/cidr.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace ztp::bpf {

namespace {

bool fail(std::string* why, std::string message) {
    if (why) *why = std::move(message);
    return false;
}

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

// Clears every bit after `prefix` bits of `bytes` (of `len` bytes); returns whether any was set.
bool clear_host_bits(uint8_t* bytes, size_t len, unsigned prefix) {
    bool had = false;
    for (size_t i = 0; i < len; ++i) {
        const unsigned first_bit = static_cast<unsigned>(i) * 8;
        uint8_t keep = 0;
        if (prefix >= first_bit + 8) keep = 0xff;
        else if (prefix > first_bit) keep = static_cast<uint8_t>(0xff << (8 - (prefix - first_bit)));
        if (bytes[i] & ~keep) had = true;
        bytes[i] &= keep;
    }
    return had;
}

constexpr std::array<uint8_t, 12> kMappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

}  // namespace

std::optional<std::array<uint8_t, 16>> mapped_address(const SocketAddress& a) {
    std::array<uint8_t, 16> out{};
    if (a.family() == AF_INET) {
        const auto* sin = reinterpret_cast<const sockaddr_in*>(a.sa());
        std::memcpy(out.data(), kMappedPrefix.data(), kMappedPrefix.size());
        std::memcpy(out.data() + 12, &sin->sin_addr, 4);
        return out;
    }
    if (a.family() == AF_INET6) {
        const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a.sa());
        std::memcpy(out.data(), &sin6->sin6_addr, 16);
        return out;
    }
    return std::nullopt;
}

std::optional<Cidr> Cidr::parse(std::string_view text, std::string* why) {
    const std::string whole(text);
    std::string_view addr_text = text;
    std::optional<unsigned> prefix;
    if (auto slash = text.find('/'); slash != std::string_view::npos) {
        addr_text = text.substr(0, slash);
        std::string_view p = text.substr(slash + 1);
        if (p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string_view::npos) {
            fail(why, quoted(text) + ": expected a prefix length (0..128) after '/'");
            return std::nullopt;
        }
        unsigned v = 0;
        for (char c : p) v = v * 10 + static_cast<unsigned>(c - '0');
        prefix = v;
    }
    Cidr c;
    const std::string a(addr_text);
    if (a.find(':') != std::string::npos) {
        c.family = AF_INET6;
        if (inet_pton(AF_INET6, a.c_str(), c.addr.data()) != 1) {
            fail(why, quoted(a) + " is not an IPv4 or IPv6 address");
            return std::nullopt;
        }
    } else {
        c.family = AF_INET;
        // inet_pton(AF_INET) takes only dotted quads (no "10", no octal): what operators expect.
        if (inet_pton(AF_INET, a.c_str(), c.addr.data()) != 1) {
            fail(why, quoted(a) + " is not an IPv4 or IPv6 address");
            return std::nullopt;
        }
    }
    const unsigned max = c.family == AF_INET ? 32 : 128;
    if (prefix && *prefix > max) {
        fail(why, quoted(text) + ": prefix length " + std::to_string(*prefix) + " is out of range for " +
                      (c.family == AF_INET ? "IPv4 (0..32)" : "IPv6 (0..128)"));
        return std::nullopt;
    }
    c.prefix = prefix.value_or(max);
    // A rule like 10.0.0.1/8 is almost always a typo for either /32 or 10.0.0.0/8: refuse to guess.
    if (clear_host_bits(c.addr.data(), max / 8, c.prefix)) {
        fail(why, quoted(text) + " has host bits set; did you mean " + c.to_string() + "?");
        return std::nullopt;
    }
    return c;
}

std::array<uint8_t, 16> Cidr::mapped() const {
    if (family != AF_INET) return addr;
    std::array<uint8_t, 16> out{};
    std::memcpy(out.data(), kMappedPrefix.data(), kMappedPrefix.size());
    std::memcpy(out.data() + 12, addr.data(), 4);
    return out;
}

bool Cidr::contains_mapped(const std::array<uint8_t, 16>& a) const {
    std::array<uint8_t, 16> masked = a;
    clear_host_bits(masked.data(), masked.size(), mapped_prefix());
    return masked == mapped();
}

bool Cidr::contains(const SocketAddress& a) const {
    auto m = mapped_address(a);
    return m && contains_mapped(*m);
}

std::string Cidr::to_string() const {
    char buf[INET6_ADDRSTRLEN] = {};
    if (!inet_ntop(family == AF_INET ? AF_INET : AF_INET6, addr.data(), buf, sizeof buf)) return "?";
    return std::string(buf) + "/" + std::to_string(prefix);
}

}  // namespace ztp::bpf
