#!/usr/bin/env python3
"""The Python `ssl` client of the interop matrix, run as its own process so that its OpenSSL
configuration is its own: Python's ssl module cannot choose TLS 1.3 cipher suites
(SSLContext.set_ciphers only covers TLS <= 1.2), so the matrix restricts them the way an operator
would, with OPENSSL_CONF's `Ciphersuites` (interop.py writes that file).

    py_client.py PORT SERVER_NAME CAFILE VERSION(1.2|1.3) CIPHER_1_2_OR_EMPTY PAYLOAD_FILE OUT_FILE

Sends PAYLOAD_FILE to the echo listener while reading the echo into OUT_FILE, until as many bytes
came back as were sent; then closes with close_notify and waits for the proxy's (unwrap). Prints
"version cipher" on stdout; exit 0 only after a clean close both ways.
"""

import socket
import select
import ssl
import sys


def main():
    port, name, cafile, version, cipher, payload_file, out_file = sys.argv[1:8]
    with open(payload_file, "rb") as f:
        payload = f.read()
    ctx = ssl.create_default_context(cafile=cafile)
    v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = v
    if cipher:
        ctx.set_ciphers(cipher)
    raw = socket.create_connection(("127.0.0.1", int(port)), timeout=60)
    s = ctx.wrap_socket(raw, server_hostname=name, suppress_ragged_eofs=False)
    # Writing and reading at once (the echo comes back while the payload is still going out), on
    # one thread: an SSL object must not be read and written by two threads concurrently.
    s.setblocking(False)
    sent, got = 0, bytearray()
    while len(got) < len(payload):
        progressed = False
        if sent < len(payload):
            try:
                sent += s.send(payload[sent:sent + 16384])
                progressed = True
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        try:
            d = s.recv(256 * 1024)
            if not d:
                break
            got += d
            progressed = True
        except ssl.SSLWantReadError:
            pass
        if not progressed:
            readable, writable, _ = select.select([s], [s] if sent < len(payload) else [], [], 60)
            if not readable and not writable:
                break  # nothing moved for 60 s
    s.setblocking(True)
    s.settimeout(60)
    with open(out_file, "wb") as f:
        f.write(got)
    print(s.version(), s.cipher()[0])
    sys.stdout.flush()
    s.unwrap()  # close_notify out, and the proxy's close_notify in (SSLEOFError otherwise)
    raw.close()
    return 0 if len(got) == len(payload) else 1


if __name__ == "__main__":
    sys.exit(main())
