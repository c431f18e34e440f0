// libFuzzer target for crypto/record_layer: RecordReader (and PostHandshakeParser, parse_alert) with
// fixed keys must never crash, read or write outside the span it is given, or accept a forgery.
//
// Input: byte 0 selects the suite (bits 0-2: index into kSuites, modulo 6) and the mode (bit 3):
//   raw     the rest is a TLS byte stream fed record by record to a RecordReader at seq 0 (a tag only
//           verifies for records sealed with the fixed keys: the seed corpus has such streams, which
//           the fuzzer mutates around: headers, lengths, padding, KeyUpdates, truncation);
//   sealed  the rest is a list of chunks [ctl][len lo][len hi][data…] (ctl bits 0-1: application
//           data / handshake / alert / application data, bit 2: flip one bit, position from the next
//           two bytes). Each chunk is sealed with a RecordWriter and opened with a RecordReader on the
//           same keys: an unflipped record must open to the same type and bytes; a flipped one must
//           never open. Handshake chunks go through the PostHandshakeParser; a KeyUpdate rekeys both
//           sides, so the fuzzer reaches later key generations.
//
// Seed corpus (tests/fuzz/corpus/record/): written by this file compiled with -DRECORD_FUZZ_SEED_MAIN
// into a plain program (g++, linked with crypto/record_layer.cpp, record_aead.cpp, key_schedule.cpp,
// ktls_sockopt.cpp, config/policy.cpp, proxy/base/socket_address.cpp, -lssl -lcrypto -lfmt), run with
// the corpus directory as its argument.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "crypto/key_schedule.hpp"
#include "crypto/ktls_sockopt.hpp"
#include "crypto/record_layer.hpp"

namespace {

using namespace ztp::crypto;
using ztp::config::Cipher;
using ztp::config::TlsVersion;

struct Suite {
    TlsVersion version;
    Cipher cipher;
};
constexpr Suite kSuites[] = {
    {TlsVersion::tls1_2, Cipher::aes_128_gcm},       {TlsVersion::tls1_2, Cipher::aes_256_gcm},
    {TlsVersion::tls1_2, Cipher::chacha20_poly1305}, {TlsVersion::tls1_3, Cipher::aes_128_gcm},
    {TlsVersion::tls1_3, Cipher::aes_256_gcm},       {TlsVersion::tls1_3, Cipher::chacha20_poly1305},
};

// Fixed, throwaway key material. TLS 1.3 keys come from a fixed traffic secret (so rekey() works).
struct Material {
    DirectionKeys keys;
    SecretBytes secret;
};

Material material(const Suite& s) {
    Material m;
    if (s.version == TlsVersion::tls1_3) {
        uint8_t secret[48];
        for (size_t i = 0; i < sizeof secret; ++i) secret[i] = static_cast<uint8_t>(i * 17 + 1);
        const size_t n = tls13_hash_size(s.cipher);
        auto k = tls13_traffic_keys(s.cipher, std::span<const uint8_t>(secret, n));
        if (!k || !m.secret.assign(std::span<const uint8_t>(secret, n))) std::abort();
        m.keys = std::move(*k);
        return m;
    }
    uint8_t key[32], iv[12];
    for (size_t i = 0; i < sizeof key; ++i) key[i] = static_cast<uint8_t>(i * 13 + 7);
    for (size_t i = 0; i < sizeof iv; ++i) iv[i] = static_cast<uint8_t>(i * 29 + 3);
    m.keys.version = s.version;
    m.keys.cipher = s.cipher;
    const size_t iv_len = s.cipher == Cipher::chacha20_poly1305 ? kKtlsIvSize : kKtlsTls12GcmSaltSize;
    if (!m.keys.key.assign(std::span<const uint8_t>(key, ktls_key_size(s.cipher))) ||
        !m.keys.iv.assign(std::span<const uint8_t>(iv, iv_len)))
        std::abort();
    return m;
}

SecretBytes clone(const SecretBytes& s) {
    SecretBytes c;
    if (!c.assign(s.view())) std::abort();
    return c;
}

DirectionKeys clone(const DirectionKeys& k) {
    DirectionKeys c;
    c.version = k.version;
    c.cipher = k.cipher;
    c.key = clone(k.key);
    c.iv = clone(k.iv);
    c.seq = k.seq;
    return c;
}

#define CHECK(x) \
    do {         \
        if (!(x)) std::abort(); \
    } while (0)

// Handles a successfully opened record's content the way the proxy would.
bool consume(const OpenedRecord& o, std::span<const uint8_t> rec, PostHandshakeParser& parser, RecordReader& r,
             RecordWriter* w) {
    CHECK(o.record_size <= rec.size() && o.plaintext_offset + o.plaintext_size <= o.record_size);
    const auto pt = rec.subspan(o.plaintext_offset, o.plaintext_size);
    switch (o.type) {
        case ContentType::handshake: {
            auto ev = parser.feed(pt);
            if (!ev) return false;
            if (ev->key_update) {
                if (!r.rekey()) return false;
                if (w != nullptr && !w->rekey()) std::abort();  // both sides derive the same keys
            }
            return true;
        }
        case ContentType::alert:
            CHECK(parse_alert(pt));  // open_in_place guarantees exactly 2 bytes
            return parser.on_other_record().ok();
        case ContentType::application_data: return parser.on_other_record().ok();
        case ContentType::change_cipher_spec: std::abort();  // never passes open_in_place
    }
    return false;
}

void fuzz_raw(const Suite& s, const uint8_t* data, size_t size) {
    Material m = material(s);
    auto r = RecordReader::create(std::move(m.keys), std::move(m.secret));
    CHECK(r);
    PostHandshakeParser parser(s.version);
    // An exactly sized heap copy: ASan reports any access past it.
    std::unique_ptr<uint8_t[]> buf(new uint8_t[size + 1]);
    if (size) std::memcpy(buf.get(), data, size);
    size_t off = 0;
    while (off < size) {
        const std::span<uint8_t> rest(buf.get() + off, size - off);
        auto need = r->record_size(rest);
        auto o = r->open_in_place(rest);
        if (!o) {
            CHECK(!need || o.error().code != EAGAIN || *need > rest.size());
            if (o.error().code == EBADMSG) {
                for (size_t i = 0; i < *need; ++i) CHECK(rest[i] == 0);  // scrubbed
            }
            if (o.error().code != EAGAIN) CHECK(!r->open_in_place(rest));  // poisoned
            return;
        }
        CHECK(need && *need == o->record_size);
        if (!consume(*o, rest, parser, *r, nullptr)) return;
        off += o->record_size;
    }
}

void fuzz_sealed(const Suite& s, const uint8_t* data, size_t size) {
    Material m = material(s);
    auto w = RecordWriter::create(clone(m.keys), clone(m.secret));
    auto r = RecordReader::create(std::move(m.keys), std::move(m.secret));
    CHECK(w && r);
    PostHandshakeParser parser(s.version);
    std::vector<uint8_t> buf(kRecordMaxSize);
    uint32_t empty_run = 0;
    size_t i = 0;
    while (i + 3 <= size) {
        const uint8_t ctl = data[i];
        size_t len = static_cast<size_t>(data[i + 1]) | static_cast<size_t>(data[i + 2]) << 8;
        i += 3;
        len = std::min<size_t>({len, size - i, RecordWriter::kMaxPlaintext});
        const ContentType type = (ctl & 3) == 1   ? ContentType::handshake
                                 : (ctl & 3) == 2 ? ContentType::alert
                                                  : ContentType::application_data;
        if (type == ContentType::alert) len = std::min<size_t>(len, 2);
        if (type == ContentType::alert && len < 2) break;
        if (type == ContentType::handshake && len == 0) break;
        const std::vector<uint8_t> plain(data + i, data + i + len);
        i += len;
        if (len) std::memcpy(buf.data() + w->headroom(), plain.data(), len);
        auto n = w->seal_in_place(buf, len, type);
        CHECK(n && *n == w->headroom() + len + w->tailroom());
        std::vector<uint8_t> rec(buf.begin(), buf.begin() + static_cast<long>(*n));  // exactly sized
        if (ctl & 4) {
            if (i + 2 > size) break;
            const size_t bit = (static_cast<size_t>(data[i]) | static_cast<size_t>(data[i + 1]) << 8) % (*n * 8);
            i += 2;
            rec[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
            auto o = r->open_in_place(rec);
            CHECK(!o);  // a forgery (or a flipped record that still opens) is a bug
            return;
        }
        empty_run = len == 0 ? empty_run + 1 : 0;
        auto o = r->open_in_place(rec);
        if (empty_run > RecordReader::kMaxEmptyRecordsInARow) {
            CHECK(!o && o.error().code == EPROTO);  // the reader's bound on empty-record runs
            return;
        }
        CHECK(o);
        CHECK(o->type == type && o->record_size == *n && o->plaintext_size == len);
        CHECK(len == 0 || std::memcmp(rec.data() + o->plaintext_offset, plain.data(), len) == 0);
        CHECK(r->seq() == w->seq());
        if (!consume(*o, rec, parser, *r, &*w)) return;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const Suite& s = kSuites[(data[0] & 7) % 6];
    if (data[0] & 8)
        fuzz_sealed(s, data + 1, size - 1);
    else
        fuzz_raw(s, data + 1, size - 1);
    return 0;
}

#ifdef RECORD_FUZZ_SEED_MAIN
#include <fstream>
#include <string>

// Writes the seed corpus: per suite, a raw stream of valid records (application data of several
// sizes, a padded-looking empty record, a KeyUpdate for TLS 1.3 followed by data under the next key,
// a close_notify) and a sealed-mode chunk list.
int main(int argc, char** argv) {
    if (argc != 2) return 2;
    const std::string dir = argv[1];
    for (uint8_t si = 0; si < 6; ++si) {
        const Suite& s = kSuites[si];
        Material m = material(s);
        auto w = RecordWriter::create(std::move(m.keys), std::move(m.secret));
        CHECK(w);
        std::vector<uint8_t> stream{si};
        std::vector<uint8_t> buf(kRecordMaxSize);
        auto add = [&](ztp::Result<size_t> n) {
            CHECK(n);
            stream.insert(stream.end(), buf.begin(), buf.begin() + static_cast<long>(n.value()));
        };
        for (size_t len : {0u, 1u, 37u, 300u}) {
            for (size_t k = 0; k < len; ++k) buf[w->headroom() + k] = static_cast<uint8_t>('a' + k % 26);
            add(w->seal_in_place(buf, len, ContentType::application_data));
        }
        if (s.version == TlsVersion::tls1_3) {
            add(w->seal_key_update(buf, true));
            std::memcpy(buf.data() + w->headroom(), "after", 5);
            add(w->seal_in_place(buf, 5, ContentType::application_data));
        }
        add(w->seal_alert(buf, kAlertWarning, kAlertCloseNotify));
        std::ofstream(dir + "/raw_" + std::to_string(si), std::ios::binary)
            .write(reinterpret_cast<const char*>(stream.data()), static_cast<std::streamsize>(stream.size()));

        const std::vector<uint8_t> sealed{static_cast<uint8_t>(si | 8),
                                          0, 5, 0, 'h', 'e', 'l', 'l', 'o',  // application data
                                          1, 5, 0, 24, 0, 0, 1, 1,           // KeyUpdate(update_requested)
                                          2, 2, 0, 1, 0,                     // close_notify
                                          4, 3, 0, 'x', 'y', 'z', 9, 0};     // flipped bit 9
        std::ofstream(dir + "/sealed_" + std::to_string(si), std::ios::binary)
            .write(reinterpret_cast<const char*>(sealed.data()), static_cast<std::streamsize>(sealed.size()));
    }
    return 0;
}
#endif
