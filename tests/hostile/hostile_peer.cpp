#include "tests/hostile/hostile_peer.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "crypto/key_schedule.hpp"
#include "crypto/secret.hpp"
#include "crypto/tls_wire.hpp"

namespace ztp::hostile {

namespace {

using crypto::SecretBytes;
using Clock = std::chrono::steady_clock;

constexpr uint8_t kTypeCcs = 20;
constexpr uint8_t kTypeAlert = 21;
constexpr uint8_t kTypeAppData = 23;
constexpr uint8_t kTypeUnknown = 99;
constexpr uint8_t kHandshakeKeyUpdate = 24;
constexpr size_t kTagSize = crypto::kRecordTagSize;
constexpr uint8_t kAlertIllegalParameter = 47;

constexpr HostileInfo kHostile[] = {
    {Hostile::bad_tag, "bad-tag", crypto::kAlertBadRecordMac, true},
    {Hostile::bad_ciphertext, "bad-ciphertext", crypto::kAlertBadRecordMac, true},
    {Hostile::oversized_ciphertext, "oversized-ciphertext", crypto::kAlertRecordOverflow, true},
    {Hostile::oversized_plaintext, "oversized-plaintext", crypto::kAlertRecordOverflow, true},
    {Hostile::empty_appdata, "empty-appdata", 0, true},
    {Hostile::padding_only, "padding-only", 0, false},
    {Hostile::zero_inner_type, "zero-inner-type", crypto::kAlertUnexpectedMessage, false},
    {Hostile::empty_alert, "empty-alert", crypto::kAlertUnexpectedMessage, false},
    {Hostile::unknown_outer_type, "unknown-outer-type", crypto::kAlertUnexpectedMessage, true},
    {Hostile::unknown_inner_type, "unknown-inner-type", crypto::kAlertUnexpectedMessage, false},
    {Hostile::ccs_after_handshake, "ccs-after-handshake", crypto::kAlertUnexpectedMessage, false},
    {Hostile::key_update_bad_value, "key-update-bad-value", kAlertIllegalParameter, false},
    {Hostile::key_update_long, "key-update-long", crypto::kAlertDecodeError, false},
    {Hostile::key_update_empty, "key-update-empty", crypto::kAlertDecodeError, false},
    {Hostile::key_update_fragmented, "key-update-fragmented", 0, false},
    {Hostile::key_update_interleaved, "key-update-interleaved", crypto::kAlertUnexpectedMessage, false},
    {Hostile::key_update_not_last, "key-update-not-last", crypto::kAlertUnexpectedMessage, false},
};

struct SslCtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
};

// What the keylog callback found. The lines are parsed and dropped at once: the secrets go into
// SecretBytes (scrubbed, unprintable), nothing else of the line is kept.
struct KeyCapture {
    SecretBytes client_traffic;  // CLIENT_TRAFFIC_SECRET_0: what we seal with
    SecretBytes server_traffic;  // SERVER_TRAFFIC_SECRET_0: what the proxy seals with
};

bool parse_hex_into(std::string_view hex, SecretBytes& out) {
    if (hex.size() % 2 != 0 || hex.size() / 2 > SecretBytes::kCapacity) return false;
    auto w = out.writable(hex.size() / 2);
    auto nib = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    for (size_t i = 0; i < w.size(); ++i) {
        const int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            out.reset();
            return false;
        }
        w[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return true;
}

// SSLKEYLOGFILE format: "LABEL <client_random hex> <secret hex>".
void keylog_callback(const SSL* ssl, const char* line) {
    auto* cap = static_cast<KeyCapture*>(SSL_get_app_data(ssl));
    if (cap == nullptr) return;
    const std::string_view l(line);
    const size_t a = l.find(' ');
    const size_t b = a == std::string_view::npos ? a : l.find(' ', a + 1);
    if (b == std::string_view::npos) return;
    const std::string_view label = l.substr(0, a), secret = l.substr(b + 1);
    if (label == "CLIENT_TRAFFIC_SECRET_0") (void)parse_hex_into(secret, cap->client_traffic);
    if (label == "SERVER_TRAFFIC_SECRET_0") (void)parse_hex_into(secret, cap->server_traffic);
}

std::optional<config::Cipher> cipher_of(const SSL* ssl) {
    switch (SSL_CIPHER_get_cipher_nid(SSL_get_current_cipher(ssl))) {
        case NID_aes_128_gcm: return config::Cipher::aes_128_gcm;
        case NID_aes_256_gcm: return config::Cipher::aes_256_gcm;
        case NID_chacha20_poly1305: return config::Cipher::chacha20_poly1305;
        default: return std::nullopt;
    }
}

const char* openssl_suite_names(config::TlsVersion v, config::Cipher c) {
    const bool t13 = v == config::TlsVersion::tls1_3;
    switch (c) {
        case config::Cipher::aes_128_gcm:
            return t13 ? "TLS_AES_128_GCM_SHA256" : "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";
        case config::Cipher::aes_256_gcm:
            return t13 ? "TLS_AES_256_GCM_SHA384" : "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";
        case config::Cipher::chacha20_poly1305:
            return t13 ? "TLS_CHACHA20_POLY1305_SHA256"
                       : "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
    }
    return "";
}

Result<int> tcp_connect(const PeerOptions& opt) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(opt.port);
    if (inet_pton(AF_INET, opt.host.c_str(), &sa.sin_addr) != 1) return make_error(EINVAL, "hostile peer: bad IPv4 address");
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_error("hostile peer: socket");
    auto fail = [fd](const char* what) {
        const Error e = errno_error(what);
        ::close(fd);
        return e;
    };
    // Before connect: the window the kernel advertises follows SO_RCVBUF from the SYN on.
    if (opt.rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opt.rcvbuf, sizeof opt.rcvbuf) != 0)
        return fail("hostile peer: SO_RCVBUF");
    const int one = 1;
    // Every record we write leaves at once: a 1-byte record is a 1-record segment, as a typing
    // client's would be.
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) return fail("hostile peer: TCP_NODELAY");
    timeval tv{};
    tv.tv_sec = opt.timeout.count() / 1000;
    tv.tv_usec = static_cast<suseconds_t>(opt.timeout.count() % 1000 * 1000);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0)
        return fail("hostile peer: socket timeouts");
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) return fail("hostile peer: connect");
    return fd;
}

}  // namespace

std::span<const HostileInfo> hostile_records() { return kHostile; }

std::optional<HostileInfo> hostile_by_name(std::string_view name) {
    for (const auto& h : kHostile)
        if (name == h.name) return h;
    return std::nullopt;
}

std::string alert_name(uint8_t d) {
    switch (d) {
        case 0: return "close_notify";
        case 10: return "unexpected_message";
        case 20: return "bad_record_mac";
        case 22: return "record_overflow";
        case 40: return "handshake_failure";
        case 47: return "illegal_parameter";
        case 50: return "decode_error";
        case 51: return "decrypt_error";
        case 70: return "protocol_version";
        case 80: return "internal_error";
        case 90: return "user_canceled";
        case 100: return "no_renegotiation";
        case 109: return "missing_extension";
        case 110: return "unsupported_extension";
        default: return "alert_" + std::to_string(d);
    }
}

const char* to_string(CloseKind k) {
    switch (k) {
        case CloseKind::open: return "open";
        case CloseKind::close_notify: return "close_notify";
        case CloseKind::fin: return "fin";
        case CloseKind::rst: return "rst";
        case CloseKind::timeout: return "timeout";
        case CloseKind::bad_record: return "bad_record";
    }
    return "?";
}

Result<std::unique_ptr<HostilePeer>> HostilePeer::connect(const PeerOptions& opt) {
    std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) return make_error(ENOMEM, "hostile peer: SSL_CTX_new");
    const int proto = opt.version == config::TlsVersion::tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (SSL_CTX_set_min_proto_version(ctx.get(), proto) != 1 || SSL_CTX_set_max_proto_version(ctx.get(), proto) != 1)
        return make_error(EPROTO, "hostile peer: protocol version");
    if (opt.cipher) {
        const char* names = openssl_suite_names(opt.version, *opt.cipher);
        const int ok = opt.version == config::TlsVersion::tls1_3 ? SSL_CTX_set_ciphersuites(ctx.get(), names)
                                                                 : SSL_CTX_set_cipher_list(ctx.get(), names);
        if (ok != 1) return make_error(EINVAL, "hostile peer: cipher suite");
    }
    if (!opt.cafile.empty()) {
        if (SSL_CTX_load_verify_locations(ctx.get(), opt.cafile.c_str(), nullptr) != 1)
            return make_error(ENOENT, "hostile peer: cannot load the CA file");
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    }
    // The one way OpenSSL 3.0 hands out TLS 1.3 traffic secrets (see crypto/session_keys.hpp).
    SSL_CTX_set_keylog_callback(ctx.get(), keylog_callback);
    // No read-ahead (the default, made explicit): OpenSSL must not pull records past the
    // handshake out of the socket, or our reader would miss them.
    SSL_CTX_set_read_ahead(ctx.get(), 0);

    auto fd = tcp_connect(opt);
    if (!fd) return fd.error();
    std::unique_ptr<HostilePeer> peer(new HostilePeer());
    peer->fd_ = *fd;
    peer->timeout_ = opt.timeout;

    KeyCapture cap;
    std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx.get()));
    if (!ssl || SSL_set_fd(ssl.get(), peer->fd_) != 1) return make_error(ENOMEM, "hostile peer: SSL_new");
    SSL_set_app_data(ssl.get(), &cap);
    if (!opt.sni.empty()) {
        if (SSL_set_tlsext_host_name(ssl.get(), opt.sni.c_str()) != 1) return make_error(EINVAL, "hostile peer: SNI");
        if (!opt.cafile.empty() && SSL_set1_host(ssl.get(), opt.sni.c_str()) != 1)
            return make_error(EINVAL, "hostile peer: host name check");
    }
    // Freeing the SSL must never put an alert on the wire: the connection is ours from now on.
    SSL_set_quiet_shutdown(ssl.get(), 1);
    if (SSL_connect(ssl.get()) != 1) {
        ERR_clear_error();
        return make_error(ECONNABORTED, "hostile peer: TLS handshake failed");
    }
    if (SSL_has_pending(ssl.get())) return make_error(EPROTO, "hostile peer: OpenSSL buffered records past the handshake");
    const auto cipher = cipher_of(ssl.get());
    if (!cipher) return make_error(ENOTSUP, "hostile peer: negotiated a suite the record layer does not carry");
    const bool t13 = SSL_version(ssl.get()) == TLS1_3_VERSION;
    peer->version_ = t13 ? config::TlsVersion::tls1_3 : config::TlsVersion::tls1_2;

    crypto::DirectionKeys tx, rx;
    SecretBytes tx_secret, rx_secret;
    if (t13) {
        if (cap.client_traffic.empty() || cap.server_traffic.empty())
            return make_error(ENOKEY, "hostile peer: keylog gave no traffic secrets");
        auto t = crypto::tls13_traffic_keys(*cipher, cap.client_traffic.view());
        auto r = crypto::tls13_traffic_keys(*cipher, cap.server_traffic.view());
        if (!t) return t.error();
        if (!r) return r.error();
        tx = std::move(*t);
        rx = std::move(*r);
        tx_secret = std::move(cap.client_traffic);
        rx_secret = std::move(cap.server_traffic);
        // Both sides' Finished went under the handshake keys: the application keys start at 0.
        // The proxy's NewSessionTickets, if any, are its first records under its key; our reader
        // takes them like any other record.
    } else {
        std::array<uint8_t, 48> master{};
        std::array<uint8_t, 32> cr{}, sr{};
        const size_t n = SSL_SESSION_get_master_key(SSL_get_session(ssl.get()), master.data(), master.size());
        SSL_get_client_random(ssl.get(), cr.data(), cr.size());
        SSL_get_server_random(ssl.get(), sr.data(), sr.size());
        auto kb = crypto::tls12_key_block(*cipher, std::span(master).first(n), cr, sr);
        OPENSSL_cleanse(master.data(), master.size());
        if (!kb) return kb.error();
        tx = std::move(kb->first);
        rx = std::move(kb->second);
        // TLS 1.2: each direction's Finished was record 0 after its ChangeCipherSpec.
        tx.seq = 1;
        rx.seq = 1;
    }
    auto w = crypto::detail::RecordAead::create(std::move(tx), std::move(tx_secret), /*encrypt=*/true);
    if (!w) return w.error();
    auto r = crypto::RecordReader::create(std::move(rx), std::move(rx_secret));
    if (!r) return r.error();
    peer->tx_.emplace(std::move(*w));
    peer->rx_.emplace(std::move(*r));
    peer->rx_handshake_.emplace(peer->version_, crypto::PostHandshakeParser::Sender::server);
    return peer;
}

uint16_t HostilePeer::local_port() const {
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return 0;
    return ntohs(sa.sin_port);
}

HostilePeer::~HostilePeer() {
    if (fd_ >= 0) ::close(fd_);
}

void HostilePeer::raw(std::span<const uint8_t> bytes) { out_.insert(out_.end(), bytes.begin(), bytes.end()); }

Result<void> HostilePeer::seal(uint8_t outer_type, uint8_t inner_type, std::span<const uint8_t> content,
                               size_t padding, bool flip_tag, bool flip_ciphertext) {
    auto& aead = *tx_;
    const bool t13 = aead.tls13();
    const size_t nonce_len = aead.explicit_nonce() ? 8 : 0;
    // TLS 1.3: TLSInnerPlaintext = content || type || zeros (RFC 8446 §5.2); TLS 1.2: the content.
    const size_t body = content.size() + (t13 ? 1 + padding : 0);
    const size_t len = nonce_len + body + kTagSize;
    const size_t at = out_.size();
    out_.resize(at + crypto::kRecordHeaderSize + len);
    uint8_t* p = out_.data() + at;
    p[0] = outer_type;
    p[1] = 3;
    p[2] = 3;
    crypto::wire::put_be(p + 3, len, 2);
    if (nonce_len) crypto::wire::put_be(p + crypto::kRecordHeaderSize, aead.seq, 8);
    uint8_t* data = p + crypto::kRecordHeaderSize + nonce_len;
    if (!content.empty()) std::memcpy(data, content.data(), content.size());
    if (t13) {
        data[content.size()] = inner_type;
        std::memset(data + content.size() + 1, 0, padding);
    }
    const auto nonce = aead.nonce(p + crypto::kRecordHeaderSize);
    const auto aad12 = crypto::wire::tls12_aad(aead.seq, outer_type, content.size());
    const std::span<const uint8_t> aad = t13 ? std::span<const uint8_t>(p, crypto::kRecordHeaderSize)
                                             : std::span<const uint8_t>(aad12);
    if (!aead.seal(nonce, aad, std::span(data, body), data + body)) {
        out_.resize(at);
        return make_error(EPROTO, "hostile peer: seal failed");
    }
    if (flip_tag) data[body + kTagSize - 1] ^= 0x01;
    if (flip_ciphertext) data[0] ^= 0x80;
    ++aead.seq;
    ++records_sent_;
    return ok_result();
}

Result<void> HostilePeer::send_app(std::span<const uint8_t> data, size_t record_size) {
    if (record_size == 0 || record_size > crypto::kRecordMaxPlaintext)
        return make_error(EINVAL, "hostile peer: record size must be 1..16384");
    if (owe_key_update_) {
        // RFC 8446 §4.6.3: update_requested is answered before our next application data.
        if (auto r = send_key_update(false); !r) return r;
    }
    for (size_t off = 0; off < data.size(); off += record_size)
        if (auto r = queue_app(data.subspan(off, std::min(record_size, data.size() - off))); !r) return r;
    return flush();
}

Result<void> HostilePeer::queue_app(std::span<const uint8_t> data) {
    if (data.size() > crypto::kRecordMaxPlaintext) return make_error(EMSGSIZE, "hostile peer: record over 2^14");
    return seal(kTypeAppData, kTypeAppData, data);
}

Result<void> HostilePeer::send_key_update(bool update_requested) {
    if (version_ != config::TlsVersion::tls1_3) return make_error(ENOTSUP, "hostile peer: KeyUpdate needs TLS 1.3");
    const uint8_t ku[] = {kHandshakeKeyUpdate, 0, 0, 1, static_cast<uint8_t>(update_requested ? 1 : 0)};
    if (auto r = seal_handshake(ku); !r) return r;
    // Everything we seal after our KeyUpdate uses the next key (RFC 8446 §4.6.3).
    if (auto r = tx_->rekey(); !r) return r;
    ++key_updates_sent_;
    owe_key_update_ = false;
    return flush();
}

Result<void> HostilePeer::send_close_notify() {
    const uint8_t alert[] = {crypto::kAlertWarning, crypto::kAlertCloseNotify};
    if (auto r = seal(outer_for(kTypeAlert), kTypeAlert, alert); !r) return r;
    return flush();
}

Result<void> HostilePeer::send_hostile(Hostile kind) {
    const bool t13 = version_ == config::TlsVersion::tls1_3;
    const uint8_t x[] = {'x'};
    auto needs13 = [&]() -> Result<void> {
        return t13 ? ok_result() : make_error(ENOTSUP, "hostile peer: this record is TLS 1.3 only");
    };
    Result<void> r;
    switch (kind) {
        case Hostile::bad_tag: r = seal(kTypeAppData, kTypeAppData, x, 0, /*flip_tag=*/true); break;
        case Hostile::bad_ciphertext: r = seal(kTypeAppData, kTypeAppData, x, 0, false, /*flip_ciphertext=*/true); break;
        case Hostile::oversized_ciphertext: {
            // One byte over what RFC 8446 §5.2 (2^14+256) / RFC 5246 §6.2.3 (2^14+2048) allow. The
            // body is never decrypted by a correct peer, so its content does not matter.
            const size_t len = crypto::kRecordMaxPlaintext + (t13 ? 256 : 2048) + 1;
            const uint8_t hdr[] = {kTypeAppData, 3, 3, static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len)};
            raw(hdr);
            out_.resize(out_.size() + len, 0x5a);
            break;
        }
        case Hostile::oversized_plaintext: {
            // Authentic, and its ciphertext length is allowed; only the plaintext is over 2^14.
            const std::vector<uint8_t> big(crypto::kRecordMaxPlaintext + 1, 'o');
            r = seal(kTypeAppData, kTypeAppData, big);
            break;
        }
        case Hostile::empty_appdata: r = seal(kTypeAppData, kTypeAppData, {}); break;
        case Hostile::padding_only:
            if (r = needs13(); r) r = seal(kTypeAppData, kTypeAppData, {}, 32);
            break;
        case Hostile::zero_inner_type:
            if (r = needs13(); r) r = seal(kTypeAppData, 0, {}, 8);
            break;
        case Hostile::empty_alert:
            if (r = needs13(); r) r = seal(kTypeAppData, kTypeAlert, {});
            break;
        case Hostile::unknown_outer_type:
            r = seal(kTypeUnknown, kTypeAppData, x);
            break;
        case Hostile::unknown_inner_type:
            if (r = needs13(); r) r = seal(kTypeAppData, kTypeUnknown, x);
            break;
        case Hostile::ccs_after_handshake: {
            if (r = needs13(); !r) break;
            const uint8_t ccs[] = {kTypeCcs, 3, 3, 0, 1, 1};
            raw(ccs);
            break;
        }
        case Hostile::key_update_bad_value: {
            if (r = needs13(); !r) break;
            const uint8_t ku[] = {kHandshakeKeyUpdate, 0, 0, 1, 2};
            r = seal_handshake(ku);
            break;
        }
        case Hostile::key_update_long: {
            if (r = needs13(); !r) break;
            const uint8_t ku[] = {kHandshakeKeyUpdate, 0, 0, 2, 0, 0};
            r = seal_handshake(ku);
            break;
        }
        case Hostile::key_update_empty: {
            if (r = needs13(); !r) break;
            const uint8_t ku[] = {kHandshakeKeyUpdate, 0, 0, 0};
            r = seal_handshake(ku);
            break;
        }
        case Hostile::key_update_fragmented:
        case Hostile::key_update_interleaved: {
            if (r = needs13(); !r) break;
            const uint8_t head[] = {kHandshakeKeyUpdate, 0, 0};
            const uint8_t tail[] = {1, 0};
            if (r = seal_handshake(head); !r) break;
            if (kind == Hostile::key_update_interleaved && !(r = seal(kTypeAppData, kTypeAppData, x))) break;
            if (r = seal_handshake(tail); !r) break;
            // Legal when it is not interleaved: the KeyUpdate ends its (second) record, so from
            // here on we seal under the next key, as the proxy must read.
            if (kind == Hostile::key_update_fragmented) {
                r = tx_->rekey();
                ++key_updates_sent_;
            }
            break;
        }
        case Hostile::key_update_not_last: {
            if (r = needs13(); !r) break;
            const uint8_t two[] = {kHandshakeKeyUpdate, 0, 0, 1, 0, kHandshakeKeyUpdate, 0, 0, 1, 0};
            r = seal_handshake(two);
            break;
        }
    }
    if (!r) return r;
    return flush();
}

Result<void> HostilePeer::flush(std::optional<Clock::time_point> deadline) {
    const auto until = deadline.value_or(Clock::now() + timeout_);
    while (out_off_ < out_.size()) {
        const ssize_t n = ::send(fd_, out_.data() + out_off_, out_.size() - out_off_, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            out_off_ += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN) return errno_error("hostile peer: send");
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
        if (left <= 0) return make_error(ETIMEDOUT, "hostile peer: the proxy stopped reading");
        pollfd p{fd_, POLLOUT, 0};
        if (::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000))) < 0 && errno != EINTR)
            return errno_error("hostile peer: poll");
    }
    out_.clear();
    out_off_ = 0;
    return ok_result();
}

void HostilePeer::shutdown_write() { ::shutdown(fd_, SHUT_WR); }

bool HostilePeer::fill(ReadResult& r) {
    if (in_off_ > 0) {
        in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(in_off_));
        in_off_ = 0;
    }
    const size_t have = in_.size();
    in_.resize(have + crypto::kRecordMaxSize);
    ssize_t n;
    do {
        n = ::recv(fd_, in_.data() + have, crypto::kRecordMaxSize, 0);
    } while (n < 0 && errno == EINTR);
    in_.resize(have + static_cast<size_t>(std::max<ssize_t>(n, 0)));
    if (n > 0) return true;
    if (n == 0)
        r.how = CloseKind::fin;
    else if (errno == EAGAIN || errno == EWOULDBLOCK)
        r.how = CloseKind::timeout;
    else if (errno == ECONNRESET || errno == EPIPE)
        r.how = CloseKind::rst;
    else {
        r.how = CloseKind::rst;
        r.detail = std::strerror(errno);
    }
    return false;
}

bool HostilePeer::take_record(ReadResult& r, bool discard, uint64_t* discarded) {
    const std::span<uint8_t> avail(in_.data() + in_off_, in_.size() - in_off_);
    auto bad = [&r](const Error& e) {
        r.how = CloseKind::bad_record;
        r.detail = e.message();
        return false;
    };
    auto size = rx_->record_size(avail);
    if (!size) return bad(size.error());
    if (avail.size() < *size) return false;
    auto rec = rx_->open_in_place(avail.first(*size));
    if (!rec) return bad(rec.error());
    in_off_ += rec->record_size;
    const auto plain = avail.subspan(rec->plaintext_offset, rec->plaintext_size);
    if (rec->type == crypto::ContentType::handshake) {
        auto ev = rx_handshake_->feed(plain);
        if (!ev) return bad(ev.error());
        if (ev->key_update) {
            // RFC 8446 §4.6.3: the proxy's next records are under its next key.
            if (auto k = rx_->rekey(); !k) return bad(k.error());
            ++key_updates_received_;
            if (ev->update_requested) {
                ++update_requests_received_;
                owe_key_update_ = true;
            }
        }
        return true;
    }
    if (auto o = rx_handshake_->on_other_record(); !o) return bad(o.error());
    if (rec->type == crypto::ContentType::alert) {
        auto a = crypto::parse_alert(plain);
        if (!a) return bad(a.error());
        if (a->description == crypto::kAlertCloseNotify) {
            r.how = CloseKind::close_notify;
            return false;
        }
        if (!r.alert) r.alert = *a;
        return true;
    }
    if (rec->type != crypto::ContentType::application_data)
        return bad(make_error(EPROTO, "hostile peer: the proxy sent a record of an unexpected type"));
    if (discard)
        *discarded += plain.size();
    else
        app_.insert(app_.end(), plain.begin(), plain.end());
    return true;
}

void HostilePeer::hand_out(ReadResult& r, size_t max) {
    const size_t take = std::min(max, app_.size() - app_off_);
    const auto from = app_.begin() + static_cast<std::ptrdiff_t>(app_off_);
    r.data.insert(r.data.end(), from, from + static_cast<std::ptrdiff_t>(take));
    r.app_bytes += take;
    app_off_ += take;
    if (app_off_ == app_.size()) {
        app_.clear();
        app_off_ = 0;
    }
}

void HostilePeer::drain(ReadResult& r, bool keep) {
    while (r.how == CloseKind::open) {
        if (!take_record(r, !keep, &r.app_bytes) && r.how == CloseKind::open) fill(r);
        if (keep) hand_out(r, SIZE_MAX);
    }
}

ReadResult HostilePeer::read_app(size_t want) {
    ReadResult r;
    while (r.how == CloseKind::open) {
        hand_out(r, want - r.data.size());
        if (r.data.size() == want) return r;
        if (r.alert) {
            // Nothing may follow a fatal alert: see how the proxy ends the connection.
            drain(r, false);
            break;
        }
        if (!take_record(r, false, nullptr) && r.how == CloseKind::open) fill(r);
    }
    hand_out(r, want - r.data.size());
    return r;
}

ReadResult HostilePeer::read_until_close(bool keep) {
    ReadResult r;
    if (keep) {
        hand_out(r, SIZE_MAX);
    } else {
        r.app_bytes = app_.size() - app_off_;
        app_.clear();
        app_off_ = 0;
    }
    drain(r, keep);
    return r;
}

// ---------------------------------------------------------------------------------------------

void PatternChecker::load_chunk(uint64_t k) {
    chunk_.resize(kChunk);
    uint8_t seed[9 + 8] = {'z', 't', 'p', '-', 'b', 'y', 't', 'e', 's'};
    crypto::wire::put_be(seed + 9, k, 8);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    if (ctx == nullptr || EVP_DigestInit_ex(ctx, EVP_shake256(), nullptr) != 1 ||
        EVP_DigestUpdate(ctx, seed, sizeof seed) != 1 || EVP_DigestFinalXOF(ctx, chunk_.data(), kChunk) != 1)
        chunk_.assign(kChunk, 0);  // cannot match the backend: reported as a mismatch
    EVP_MD_CTX_free(ctx);
    loaded_ = k;
}

std::vector<uint8_t> PatternChecker::bytes_at(uint64_t offset, size_t n) {
    std::vector<uint8_t> out;
    PatternChecker c;
    while (out.size() < n) {
        const uint64_t at = offset + out.size();
        c.load_chunk(at / kChunk);
        const size_t from = at % kChunk, take = std::min(kChunk - from, n - out.size());
        out.insert(out.end(), c.chunk_.begin() + static_cast<long>(from), c.chunk_.begin() + static_cast<long>(from + take));
    }
    return out;
}

bool PatternChecker::feed(std::span<const uint8_t> data) {
    for (size_t i = 0; i < data.size();) {
        const uint64_t k = offset_ / kChunk;
        if (k != loaded_) load_chunk(k);
        const size_t at = offset_ % kChunk;
        const size_t n = std::min(kChunk - at, data.size() - i);
        if (std::memcmp(chunk_.data() + at, data.data() + i, n) != 0) {
            for (size_t j = 0; j < n; ++j)
                if (chunk_[at + j] != data[i + j]) {
                    if (!first_mismatch) first_mismatch = offset_ + j;
                    break;
                }
            offset_ += n;
            return false;
        }
        offset_ += n;
        i += n;
    }
    return true;
}

}  // namespace ztp::hostile
