// The PROXY protocol v2 header ztproxy writes to a backend (backend option proxy_protocol = "v2")
// before the first relayed byte, as specified in HAProxy's doc/proxy-protocol.txt:
//
//   16 bytes   signature \r\n\r\n\0\r\nQUIT\n, 0x21 (version 2, PROXY), 0x11 TCP/IPv4 or 0x21
//              TCP/IPv6, length of the rest (big endian)
//   addresses  source = the client, destination = the listener address it connected to, then the
//              two ports (IPv4-mapped IPv6 pairs are sent as IPv4)
//   TLVs       0x01 ALPN       the negotiated protocol (absent when none was negotiated)
//              0x02 AUTHORITY  the SNI, lower case (absent without SNI)
//              0x20 SSL        client flags (0x01 SSL always; 0x02 CERT_CONN when the client sent a
//                              certificate on this connection; 0x04 CERT_SESS when the session has
//                              one, resumed or not), verify (0 = a client certificate was presented
//                              and verified, 1 = none was presented), then sub-TLVs:
//                   0x21 VERSION  e.g. "TLSv1.3"
//                   0x22 CN       the client certificate's common name (mTLS only)
//                   0x23 CIPHER   OpenSSL's name, e.g. "TLS_AES_128_GCM_SHA256"
//              0xE0 ztproxy CLIENT_SUBJECT  the client certificate's full subject, RFC 2253, UTF-8
//                              (mTLS only). 0xE0 is in the range the spec reserves for
//                              application-specific types (PP2_TYPE_MIN_CUSTOM..MAX_CUSTOM).
#pragma once

#include <cstdint>
#include <vector>

#include "crypto/handshake.hpp"
#include "proxy/base/result.hpp"
#include "proxy/base/socket_address.hpp"

namespace ztp::conn::pp2 {

inline constexpr uint8_t kSignature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
inline constexpr uint8_t kVersion2Proxy = 0x21;
inline constexpr uint8_t kTcpIpv4 = 0x11;
inline constexpr uint8_t kTcpIpv6 = 0x21;

inline constexpr uint8_t kTypeAlpn = 0x01;
inline constexpr uint8_t kTypeAuthority = 0x02;
inline constexpr uint8_t kTypeSsl = 0x20;
inline constexpr uint8_t kSubtypeSslVersion = 0x21;
inline constexpr uint8_t kSubtypeSslCn = 0x22;
inline constexpr uint8_t kSubtypeSslCipher = 0x23;
inline constexpr uint8_t kTypeClientSubject = 0xE0;  // ztproxy's custom type, see above

inline constexpr uint8_t kClientSsl = 0x01;
inline constexpr uint8_t kClientCertConn = 0x02;
inline constexpr uint8_t kClientCertSess = 0x04;
inline constexpr uint32_t kVerifyNoCertificate = 1;  // the spec only says "non-zero"

inline constexpr size_t kFixedSize = 16;
inline constexpr size_t kMaxSize = kFixedSize + 0xFFFF;  // the length field is 16 bits

// The whole header for one connection. Fails with EAFNOSUPPORT when the two addresses are not
// both IPv4 or both IPv6, and EMSGSIZE when a value or the whole header exceeds the 16-bit
// lengths (only a client certificate subject of tens of KiB could): a truncated identity would
// be a different identity, so nothing is cut short.
Result<std::vector<uint8_t>> encode(const SocketAddress& source, const SocketAddress& destination,
                                    const crypto::SessionInfo& session);

}  // namespace ztp::conn::pp2
