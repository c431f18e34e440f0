// ztproxy's own TLS record layer: record framing, RecordReader / RecordWriter, post-handshake message
// parsing and KeyUpdate rate limiting. The AEAD itself is in record_aead.cpp. See record_layer.hpp for
// the contract and the error codes.
#include "crypto/tls_wire.hpp"
#include "crypto/record_layer.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>

namespace ztp::crypto {

namespace {

using wire::put_be;
using wire::tls12_aad;

constexpr size_t kExplicitNonceSize = 8;  // TLS 1.2 AES-GCM (RFC 5288 §3)
constexpr uint8_t kHandshakeNewSessionTicket = 4;
constexpr uint8_t kHandshakeKeyUpdate = 24;
// RFC 8446 §4.6.1: lifetime(4) age_add(4) nonce<0..255> ticket<1..2^16-1> extensions<0..2^16-2>.
constexpr uint32_t kMaxNewSessionTicketBody = 4 + 4 + (1 + 255) + (2 + 65535) + (2 + 65534);



bool known_type(uint8_t t) {
    // change_cipher_spec is deliberately absent: after the handshake it could only start a
    // renegotiation (TLS 1.2, which we refuse) and is forbidden outright inside protected TLS 1.3
    // records (RFC 8446 §5). Heartbeat and unknown types are unexpected_message.
    return t == static_cast<uint8_t>(ContentType::alert) || t == static_cast<uint8_t>(ContentType::handshake) ||
           t == static_cast<uint8_t>(ContentType::application_data);
}

// Bytes the AEAD adds around the content: [explicit nonce] + [TLS 1.3 inner type] + tag.
size_t min_length(const detail::RecordAead& a) {
    return (a.explicit_nonce() ? kExplicitNonceSize : 0) + (a.tls13() ? 1 : 0) + kRecordTagSize;
}

// The TLSCiphertext length limit: RFC 8446 §5.2 (2^14 + 256) and RFC 5246 §6.2.3 (2^14 + 2048).
size_t max_ciphertext(const detail::RecordAead& a) {
    return kRecordMaxPlaintext + (a.tls13() ? 256 : 2048);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// RecordReader

Result<RecordReader> RecordReader::create(DirectionKeys keys, SecretBytes tls13_traffic_secret) {
    auto a = detail::RecordAead::create(std::move(keys), std::move(tls13_traffic_secret), /*encrypt=*/false);
    if (!a) return a.error();
    return RecordReader(std::move(*a));
}

Result<size_t> RecordReader::check_header(std::span<const uint8_t> in, RecordError* error) const {
    if (in.size() < kRecordHeaderSize) return kRecordHeaderSize;
    auto refuse = [error](RecordError e, int code, const char* what) -> Result<size_t> {
        if (error) *error = e;
        return make_error(code, what);
    };
    // RFC 8446 §5: after the peer's Finished a change_cipher_spec is an unexpected record type.
    const auto unexpected = [](uint8_t t) {
        return t == static_cast<uint8_t>(ContentType::change_cipher_spec) ? RecordError::ccs_after_handshake
                                                                          : RecordError::unknown_record_type;
    };
    const uint8_t type = in[0];
    // RFC 8446 §5 / RFC 5246 §6: an unexpected record type is unexpected_message.
    if (aead_.tls13()) {
        // Every protected TLS 1.3 record is outwardly application_data; the unprotected
        // change_cipher_spec of middlebox compatibility is only allowed before the peer's Finished,
        // which is behind us (RFC 8446 §5).
        if (type != static_cast<uint8_t>(ContentType::application_data))
            return refuse(unexpected(type), EPROTO, "record layer: outer content type is not application_data");
    } else if (!known_type(type)) {
        // OpenSSL tries the tag first here (the type is in TLS 1.2's AAD) and answers
        // bad_record_mac; we refuse at the header, as for TLS 1.3.
        return refuse(unexpected(type), EPROTO, "record layer: unexpected content type");
    }
    // RFC 8446 §5.1 / RFC 5246 §6.2.1: 0x0303 for every TLS 1.2 and 1.3 record after the hello.
    // A field out of its range is decode_error (RFC 8446 §6.2). OpenSSL 3.0 mostly answers
    // protocol_version, which is about version negotiation, long over by now.
    if (in[1] != 3 || in[2] != 3)
        return refuse(RecordError::bad_record_version, EPROTO, "record layer: record version is not 0x0303");
    const size_t len = static_cast<size_t>(in[3]) << 8 | in[4];
    // RFC 8446 §5.2 allows 2^14+256 and RFC 5246 §6.2.3 2^14+2048 of ciphertext for any cipher; our
    // AEADs expand by a fixed amount, so a plaintext over 2^14 (RFC 8446 §5.4: TLSInnerPlaintext over
    // 2^14+1) is exactly a length over this. Rejecting at the header bounds every buffer to
    // kRecordMaxSize and never decrypts an oversized record.
    if (len > kRecordMaxPlaintext + min_length(aead_))
        return refuse(len > max_ciphertext(aead_) ? RecordError::ciphertext_overflow : RecordError::plaintext_overflow, EMSGSIZE,
                      "record layer: record length over the limit");
    // Shorter than the AEAD overhead: no tag (and no inner type) to check, so no valid record. Its
    // decryption cannot succeed: bad_record_mac (RFC 8446 §5.2), as OpenSSL and kTLS (EBADMSG) say.
    if (len < min_length(aead_))
        return refuse(RecordError::record_too_short, EPROTO, "record layer: record too short for the AEAD");
    return kRecordHeaderSize + len;
}

Result<size_t> RecordReader::record_size(std::span<const uint8_t> in, RecordError* error) const {
    if (!aead_.usable()) return make_error(ENOTRECOVERABLE, "record layer: reader poisoned");
    return check_header(in, error);
}

Result<size_t> RecordReader::record_size(std::span<const uint8_t> in, uint8_t* alert) const {
    RecordError e{};
    auto n = record_size(in, &e);
    if (!n && alert && n.error().code != ENOTRECOVERABLE) *alert = describe(e).alert;
    return n;
}

Error RecordReader::refuse(RecordError e, int code, const char* what) {
    aead_.poison();
    failure_ = e;
    return make_error(code, what);
}

Result<OpenedRecord> RecordReader::open_in_place(std::span<uint8_t> in) {
    if (!aead_.usable()) return make_error(ENOTRECOVERABLE, "record layer: reader poisoned");
    RecordError header_error{};
    auto size = check_header(in, &header_error);
    if (!size) {
        // Framing is lost: no later byte of the stream can be located, let alone trusted. Nothing was
        // decrypted, so nothing is scrubbed: the span is left exactly as it was.
        return refuse(header_error, size.error().code, size.error().what);
    }
    if (in.size() < *size) return make_error(EAGAIN, "record layer: incomplete record");
    // Never wrap (RFC 8446 §5.3, RFC 5246 §6.1): a wrapped counter reuses nonces (and AAD) under the
    // same key. 2^64-1 is treated as exhausted, one record early, so seq+1 can never overflow.
    if (aead_.seq == UINT64_MAX) {
        aead_.poison();
        return make_error(EOVERFLOW, "record layer: sequence number exhausted");
    }

    const std::span<uint8_t> rec = in.first(*size);
    const size_t prefix = aead_.explicit_nonce() ? kExplicitNonceSize : 0;
    const size_t ct_len = rec.size() - kRecordHeaderSize - prefix - kRecordTagSize;
    const std::span<uint8_t> body = rec.subspan(kRecordHeaderSize + prefix, ct_len);
    const uint8_t* tag = rec.data() + rec.size() - kRecordTagSize;
    const auto nonce = aead_.nonce(rec.data() + kRecordHeaderSize);
    const auto aad12 = tls12_aad(aead_.seq, rec[0], ct_len);
    // TLS 1.3 AAD is the record header as received (RFC 8446 §5.2); TLS 1.2's binds seq and type.
    const std::span<const uint8_t> aad =
        aead_.tls13() ? std::span<const uint8_t>(rec.data(), kRecordHeaderSize) : std::span<const uint8_t>(aad12);

    if (!aead_.open(nonce, aad, body, tag)) {
        // The body now holds unauthenticated "plaintext": scrub the whole record so none of it can be
        // released. Poisoned: a bad tag means the peer is attacking or broken, and nothing after it
        // can be trusted (kTLS likewise leaves the socket failed with EBADMSG).
        OPENSSL_cleanse(rec.data(), rec.size());
        return refuse(RecordError::bad_record_mac, EBADMSG, "record layer: record authentication failed");
    }
    ++aead_.seq;

    uint8_t type = rec[0];
    size_t content = ct_len;
    if (aead_.tls13()) {
        // TLSInnerPlaintext = content || type || zeros: the type is the last non-zero byte
        // (RFC 8446 §5.4). The scan's duration reveals the padding length, as in OpenSSL; the total
        // record length is visible on the wire anyway.
        while (content > 0 && body[content - 1] == 0) --content;
        if (content == 0) {
            OPENSSL_cleanse(rec.data(), rec.size());
            return refuse(RecordError::zero_inner_type, EPROTO, "record layer: TLS 1.3 record without a content type");
        }
        type = body[--content];
    }
    std::optional<RecordError> bad;
    if (!known_type(type))
        bad = type == static_cast<uint8_t>(ContentType::change_cipher_spec) ? RecordError::ccs_after_handshake
                                                                            : RecordError::unknown_record_type;
    else if (type == static_cast<uint8_t>(ContentType::alert) && content != 2)
        // RFC 8446 §5.1: an alert record holds exactly one alert (an empty one included); OpenSSL
        // enforces the same for 1.2.
        bad = RecordError::malformed_alert;
    else if (content == 0 && type != static_cast<uint8_t>(ContentType::application_data))
        // RFC 8446 §5.1 / RFC 5246 §6.2.1: only application data may be empty.
        bad = RecordError::empty_handshake_record;
    else if (content == 0 && ++aead_.empty_run > RecordReader::kMaxEmptyRecordsInARow)
        bad = RecordError::too_many_empty_records;
    if (content != 0) aead_.empty_run = 0;
    if (bad) {
        // Authentic but illegal: the connection ends. Scrubbed anyway, so an error never leaves
        // plaintext behind for a caller that might release the span by mistake.
        OPENSSL_cleanse(rec.data(), rec.size());
        return refuse(*bad, EPROTO, describe(*bad).name);
    }
    return OpenedRecord{static_cast<ContentType>(type), rec.size(), kRecordHeaderSize + prefix, content};
}

Result<void> RecordReader::rekey() {
    return aead_.rekey();
}

// ---------------------------------------------------------------------------------------------
// RecordWriter

Result<RecordWriter> RecordWriter::create(DirectionKeys keys, SecretBytes tls13_traffic_secret,
                                          size_t max_plaintext) {
    if (max_plaintext == 0 || max_plaintext > kMaxPlaintext)
        return make_error(EINVAL, "record layer: record plaintext limit must be 1..2^14");
    auto a = detail::RecordAead::create(std::move(keys), std::move(tls13_traffic_secret), /*encrypt=*/true);
    if (!a) return a.error();
    return RecordWriter(std::move(*a), max_plaintext);
}

size_t RecordWriter::headroom() const {
    return kRecordHeaderSize + (aead_.explicit_nonce() ? kExplicitNonceSize : 0);
}

size_t RecordWriter::tailroom() const {
    return kRecordTagSize + (aead_.tls13() ? 1 : 0);
}

Result<size_t> RecordWriter::seal_in_place(std::span<uint8_t> buf, size_t plaintext_size, ContentType type) {
    if (!aead_.usable()) return make_error(ENOTRECOVERABLE, "record layer: writer poisoned");
    const auto t = static_cast<uint8_t>(type);
    // The same rules we hold the peer to (see open_in_place).
    if (!known_type(t)) return make_error(EINVAL, "record layer: cannot seal this content type");
    // RFC 6066 §4: with a negotiated max_fragment_length no record may carry more plaintext (the
    // client's buffers are sized for it and it answers record_overflow).
    if (plaintext_size > max_plaintext_) return make_error(EMSGSIZE, "record layer: plaintext over the record limit");
    if (plaintext_size == 0 && type != ContentType::application_data)
        return make_error(EINVAL, "record layer: empty handshake or alert record");
    if (type == ContentType::alert && plaintext_size != 2)
        return make_error(EINVAL, "record layer: an alert record holds exactly one alert");
    const size_t head = headroom();
    const size_t total = head + plaintext_size + tailroom();
    if (buf.size() < total) return make_error(EINVAL, "record layer: buffer smaller than the record");
    if (aead_.seq == UINT64_MAX) {
        // Never wrap: a repeated sequence number is a repeated nonce under the same key.
        aead_.poison();
        return make_error(EOVERFLOW, "record layer: sequence number exhausted");
    }

    uint8_t* p = buf.data();
    p[0] = aead_.tls13() ? static_cast<uint8_t>(ContentType::application_data) : t;
    p[1] = 3;
    p[2] = 3;
    put_be(p + 3, total - kRecordHeaderSize, 2);
    if (aead_.explicit_nonce()) {
        // The explicit nonce must never repeat under a key: the sequence number never does (it never
        // wraps). OpenSSL sealed the handshake's last records under this key with its own counter from
        // a random start; a collision with our small seq values has probability ~2^-60.
        put_be(p + kRecordHeaderSize, aead_.seq, kExplicitNonceSize);
    }
    size_t inner = plaintext_size;
    if (aead_.tls13()) p[head + inner++] = t;  // TLSInnerPlaintext without padding
    const auto nonce = aead_.nonce(p + kRecordHeaderSize);
    const auto aad12 = tls12_aad(aead_.seq, t, plaintext_size);
    const std::span<const uint8_t> aad =
        aead_.tls13() ? std::span<const uint8_t>(p, kRecordHeaderSize) : std::span<const uint8_t>(aad12);
    if (!aead_.seal(nonce, aad, buf.subspan(head, inner), p + head + inner)) {
        // An EVP failure mid-record leaves the context in an unknown state: refuse to seal anything
        // else under it, and leave no half-encrypted plaintext behind.
        OPENSSL_cleanse(p, total);
        aead_.poison();
        return make_error(EPROTO, "record layer: EVP encryption failed");
    }
    ++aead_.seq;
    return total;
}

Result<size_t> RecordWriter::seal_alert(std::span<uint8_t> out, uint8_t level, uint8_t description) {
    const size_t head = headroom();
    if (out.size() < head + 2 + tailroom()) return make_error(EINVAL, "record layer: buffer smaller than the record");
    out[head] = level;
    out[head + 1] = description;
    return seal_in_place(out, 2, ContentType::alert);
}

Result<size_t> RecordWriter::seal_key_update(std::span<uint8_t> out, bool update_requested) {
    if (!aead_.usable()) return make_error(ENOTRECOVERABLE, "record layer: writer poisoned");
    if (!aead_.tls13()) return make_error(ENOTSUP, "record layer: TLS 1.2 has no KeyUpdate");
    // Checked before sealing: a sealed KeyUpdate we then could not follow would have used up a
    // sequence number the client never sees (its next record would fail to authenticate).
    if (!aead_.can_rekey()) return make_error(ENOKEY, "record layer: no traffic secret to update");
    const size_t head = headroom();
    if (out.size() < head + 5 + tailroom()) return make_error(EINVAL, "record layer: buffer smaller than the record");
    // RFC 8446 §4.6.3: HandshakeType key_update(24), uint24 length 1, KeyUpdateRequest.
    const uint8_t msg[5] = {kHandshakeKeyUpdate, 0, 0, 1, static_cast<uint8_t>(update_requested ? 1 : 0)};
    std::memcpy(out.data() + head, msg, sizeof msg);
    auto n = seal_in_place(out, sizeof msg, ContentType::handshake);
    if (!n) return n;
    if (auto r = aead_.rekey(); !r) {
        // The peer will switch keys after this record; we cannot: the record must not be sent.
        OPENSSL_cleanse(out.data(), *n);
        return r.error();
    }
    return n;
}

Result<void> RecordWriter::rekey() {
    return aead_.rekey();
}

// ---------------------------------------------------------------------------------------------
// Control record contents

Result<Alert> parse_alert(std::span<const uint8_t> plaintext) {
    if (plaintext.size() != 2) return make_error(EPROTO, "record layer: alert is not 2 bytes");
    return Alert{plaintext[0], plaintext[1]};
}

Error PostHandshakeParser::fail(RecordError e, const char* why) {
    failure_ = e;
    return make_error(EPROTO, why);
}

Result<PostHandshakeEvents> PostHandshakeParser::feed(std::span<const uint8_t> data) {
    if (failure_) return make_error(ENOTRECOVERABLE, "post-handshake parser poisoned");
    if (version_ != config::TlsVersion::tls1_3)
        // TLS 1.2 has no post-handshake messages other than renegotiation (HelloRequest, ClientHello),
        // which ztproxy does not support (the handshake sets SSL_OP_NO_RENEGOTIATION too).
        return fail(RecordError::unexpected_handshake_message,
                    "post-handshake: TLS 1.2 handshake message (renegotiation is not supported)");

    PostHandshakeEvents ev;
    size_t i = 0;
    while (i < data.size()) {
        if (hdr_len_ < hdr_.size()) {
            const size_t take = std::min(hdr_.size() - hdr_len_, data.size() - i);
            std::memcpy(hdr_.data() + hdr_len_, data.data() + i, take);
            hdr_len_ += take;
            i += take;
            if (hdr_len_ < hdr_.size()) break;  // the header continues in the next record
            body_len_ = static_cast<uint32_t>(hdr_[1]) << 16 | static_cast<uint32_t>(hdr_[2]) << 8 | hdr_[3];
            body_seen_ = 0;
            if (hdr_[0] == kHandshakeKeyUpdate) {
                if (body_len_ != 1)
                    return fail(RecordError::key_update_bad_length, "post-handshake: KeyUpdate length is not 1");
            } else if (hdr_[0] == kHandshakeNewSessionTicket && sender_ == Sender::server) {
                // Skipped without buffering; the bound only stops a peer from announcing a body that
                // keeps the connection in "mid message" for up to 16 MiB.
                if (body_len_ > kMaxNewSessionTicketBody)
                    return fail(RecordError::unexpected_handshake_message,
                                "post-handshake: NewSessionTicket too long");
            } else {
                // Clients send nothing but KeyUpdate after the handshake unless the server asked
                // for post-handshake authentication, which ztproxy never does.
                return fail(RecordError::unexpected_handshake_message, "post-handshake: unexpected handshake message");
            }
        }
        // Body bytes of the current message.
        const uint32_t take = static_cast<uint32_t>(std::min<size_t>(body_len_ - body_seen_, data.size() - i));
        if (hdr_[0] == kHandshakeKeyUpdate && take > 0) {
            const uint8_t request = data[i];
            // RFC 8446 §4.6.3: update_not_requested(0), update_requested(1); anything else is
            // illegal_parameter.
            if (request > 1) return fail(RecordError::key_update_bad_value, "post-handshake: bad KeyUpdateRequest");
            ev.update_requested = request == 1;
        }
        body_seen_ += take;
        i += take;
        if (body_seen_ < body_len_) break;  // the body continues in the next record
        // Message complete.
        hdr_len_ = 0;
        if (hdr_[0] == kHandshakeKeyUpdate) {
            // RFC 8446 §5.1: a KeyUpdate must end its record; bytes behind it in the same record were
            // protected with the old key but would be meant for the new one.
            if (i != data.size())
                return fail(RecordError::key_update_not_at_record_end,
                            "post-handshake: KeyUpdate not at the end of its record");
            ev.key_update = true;
        } else {
            ++ev.tickets;
        }
    }
    return ev;
}

Result<void> PostHandshakeParser::on_other_record() {
    if (failure_) return make_error(ENOTRECOVERABLE, "post-handshake parser poisoned");
    if (mid_message())
        return fail(RecordError::handshake_interleaved, "post-handshake: other record inside a split handshake message");
    return ok_result();
}

// ---------------------------------------------------------------------------------------------
// KeyUpdateLimiter

KeyUpdateLimiter::KeyUpdateLimiter(Limits limits) : limits_(limits) {
    limits_.per_second = std::clamp(limits_.per_second, 1u, kMaxPerSecond);
}

bool KeyUpdateLimiter::allow(uint64_t records_under_current_key, Clock::time_point now) {
    if (accepted_ > 0 && records_under_current_key < limits_.min_records) return false;
    // times_[next_] is the accept time `per_second` accepts ago once the ring is full: within the
    // last second means this one would be the (per_second+1)-th in a one-second window.
    if (accepted_ >= limits_.per_second && now - times_[next_] < std::chrono::seconds(1)) return false;
    times_[next_] = now;
    next_ = (next_ + 1) % limits_.per_second;
    ++accepted_;
    return true;
}

}  // namespace ztp::crypto
