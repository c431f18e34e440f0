// Taking the traffic keys out of OpenSSL after a server handshake, so that the kernel (kTLS TX/RX) or
// ztproxy's own record layer can carry on the connection's records.
//
// What OpenSSL 3.0 does not tell through its API, and how we learn it:
//   * TLS 1.3 application traffic secrets: only through the keylog callback. enable_key_capture()
//     installs one that parses CLIENT_TRAFFIC_SECRET_0 / SERVER_TRAFFIC_SECRET_0 into per-SSL ex_data
//     (SecretBytes, scrubbed) and throws the line away; nothing else in the line is kept or logged.
//   * Record sequence numbers: OpenSSL has no public getter. The message callback sees every record
//     header read and written (SSL3_RT_HEADER) and every handshake message / ChangeCipherSpec after it
//     passed, so we count the records that went through after each direction's key change:
//       TLS 1.2: after the ChangeCipherSpec in that direction (the Finished is record 0 → seq 1).
//       TLS 1.3: after that direction's Finished (the server's NewSessionTickets are records 0..n-1 of
//                the server's application key, so tx.seq = number of ticket records).
//     The differential tests (tests/unit/session_keys_test.cpp) check both against OpenSSL's own
//     record layer, tickets on and off.
// TLS 1.2 keys come from the public API (SSL_SESSION_get_master_key + the randoms).
//
// Both callbacks are SSL_CTX-wide and replace any keylog / message callback set before. The message
// callback is copied into each SSL at SSL_new; the keylog callback is read from the SSL's *current*
// SSL_CTX when OpenSSL logs a secret, which happens after an SNI switch (SSL_set_SSL_CTX). So call
// enable_key_capture() on EVERY SSL_CTX a connection can start on or be switched to. If a context
// lacks it, take_session_keys() fails with ENOKEY instead of guessing.
// SSL_clear() re-use of an SSL object for a second connection is not supported (the proxy never does it).
#pragma once

#include <openssl/ssl.h>

#include "crypto/key_schedule.hpp"
#include "crypto/ktls_sockopt.hpp"
#include "crypto/secret.hpp"
#include "proxy/base/result.hpp"

namespace ztp::crypto {

// Installs the keylog and message callbacks on `ctx`. Idempotent; safe to call from any thread and on
// any number of contexts (the ex_data index behind it is allocated once per process).
void enable_key_capture(SSL_CTX* ctx);

struct SessionKeys {
    DirectionKeys rx;  // client → server: what we decrypt
    DirectionKeys tx;  // server → client: what we encrypt
    // TLS 1.3 only (empty for 1.2): the application traffic secrets the keys above came from, for
    // KeyUpdate (tls13_next_traffic_secret → tls13_traffic_keys, seq restarts at 0). They leave
    // OpenSSL's ex_data with this struct: whoever holds the SessionKeys is their only keeper.
    SecretBytes rx_secret;
    SecretBytes tx_secret;
    // The most plaintext one record towards the client may carry: 2^14, or the max_fragment_length
    // the client negotiated (negotiated_max_fragment_length). Whoever seals records honours it.
    size_t max_plaintext = kRecordMaxPlaintext;
};

// After SSL_do_handshake() returned 1 on a server SSL from a context with enable_key_capture():
// version and cipher from the SSL, keys for both directions, and seq = records OpenSSL already
// processed under each key. One shot: the captured TLS 1.3 secrets are scrubbed from the SSL's
// ex_data, and a second call fails with EALREADY.
// Errors: ENOTSUP  cipher / version the kernel and our record layer do not carry (anything but the
//                  three AEAD suites of tls_context.cpp, or a protocol other than TLS 1.2/1.3);
//         EINVAL   not a server SSL, or the handshake has not finished;
//         ENOKEY   the secrets or record counts were not captured (enable_key_capture() missing on the
//                  SSL's SSL_CTX, or a message callback replaced ours);
//         EALREADY already taken, or OpenSSL itself enabled kTLS on this SSL;
//         EPROTO   inconsistent capture (e.g. a secret of the wrong size for the suite).
// Whether the connection can actually move to another record layer is a separate question:
// see has_buffered_input().
Result<SessionKeys> take_session_keys(SSL* ssl);

// True when OpenSSL already holds bytes read from the transport beyond the handshake (decrypted and
// unread, or still encrypted in its read-ahead buffer). Such a connection cannot move to kTLS RX or our
// record layer without first draining them through SSL_read: the kernel would never see those bytes,
// and rx.seq does not count records OpenSSL has not parsed yet. Callers refuse the move and say why.
bool has_buffered_input(const SSL* ssl);

// After the handshake: the record plaintext limit the client negotiated with max_fragment_length
// (RFC 6066 §4: 512, 1024, 2048 or 4096), or 2^14 when it did not. OpenSSL 3.0 honours it on its own
// record path; it does not negotiate record_size_limit (RFC 8449), so this is the only limit a
// client can ask for.
size_t negotiated_max_fragment_length(const SSL* ssl);

}  // namespace ztp::crypto
