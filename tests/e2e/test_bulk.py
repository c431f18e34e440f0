"""ztproxy end to end, volume: 64 MiB up and down through curl, 64 MiB both ways at once over one
TLS connection, and 200 concurrent connections each exchanging its own payload.

Data integrity is checked with sha256 against streams recomputed locally (backend.pattern_chunks),
never by holding the whole transfer in memory. No timing assertions: only bounded waits.
"""

import hashlib
import json
import os
import select
import ssl
import threading
import time
import unittest

import backend as backend_mod
from harness import (E2ETestCase, CertAuthority, curl, curl_args, file_size_and_sha256, policy_toml, tls_connect)

MIB = 1024 * 1024
BIG = 64 * MIB


def duplex_exchange(sock, chunks, total, timeout=120.0):
    """Sends `chunks` (an iterator of bytes, `total` bytes in all) while reading the echo, on one
    non-blocking TLS socket, in one thread. (One OpenSSL SSL object must not be used by a reading
    and a writing thread at once, so "both ways at once" is a select() loop, not two threads.)
    Returns (sha256 of what was sent, sha256 of what came back, bytes received)."""
    sock.setblocking(False)
    sent_hash, recv_hash = hashlib.sha256(), hashlib.sha256()
    received = 0
    pending = b""
    sent = 0
    write_done = False
    deadline = time.monotonic() + timeout
    while received < total:
        if not pending and not write_done:
            pending = next(chunks, b"")
            if pending:
                sent_hash.update(pending)
            else:
                write_done = True
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("duplex exchange timed out: sent %d, received %d of %d"
                                 % (sent, received, total))
        # Decrypted bytes may already wait inside the SSL object, invisible to select().
        if sock.pending() == 0:
            r, w, _ = select.select([sock], [sock] if pending else [], [], min(left, 5.0))
        else:
            r, w = [sock], []
        if r:
            try:
                while True:
                    d = sock.recv(256 * 1024)
                    if not d:
                        raise AssertionError("peer closed after %d of %d bytes" % (received, total))
                    recv_hash.update(d)
                    received += len(d)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        if w and pending:
            try:
                n = sock.send(pending)
                sent += n
                pending = pending[n:]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass  # retried with the same bytes, as OpenSSL requires
    sock.setblocking(True)
    return sent_hash.hexdigest(), recv_hash.hexdigest(), received


def payload_for(i, size):
    seed = hashlib.sha256(b"conn-%d" % i).digest()
    return (b"conn-%06d:" % i + hashlib.shake_256(seed).digest(size))[:size]


class BulkTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ca = CertAuthority(os.path.join(cls.class_tmp, "pki"))
        cls.leaf = cls.ca.issue("localhost", "ec", dns=["localhost", "echo.test"])

    def setUp(self):
        super().setUp()
        self.http = self.start_backend("http")
        self.echo = self.start_backend("echo")
        # One listener; SNI echo.test is routed to the echo backend, everything else to HTTP.
        self.proxy = self.start_policy_proxy(policy_toml(
            listeners=[{"name": "main", "certs": [("main", self.leaf, None)]}],
            backends=[{"name": "http", "addresses": [self.http.address]},
                      {"name": "echo", "addresses": [self.echo.address]}],
            routes=[{"server_names": ["echo.test"], "backend": "echo"},
                    {"default": True, "backend": "http"}]))
        self.port = self.proxy.port

    def test_upload_64mib_with_curl(self):
        path = os.path.join(self.tmp, "upload.bin")
        with open(path, "wb") as f:
            for c in backend_mod.pattern_chunks(BIG):
                f.write(c)
        expected = backend_mod.pattern_sha256(BIG)
        r = curl(["--data-binary", "@" + path, "-H", "Content-Type: application/octet-stream"]
                 + curl_args("localhost", self.port, "/sha256", self.ca.cert), timeout=150)
        self.assertEqual(r.returncode, 0, "curl: %s\n%s" % (r.stderr, self.proxy.diag()))
        got = json.loads(r.stdout)
        self.assertEqual(got, {"sha256": expected, "length": BIG})
        [e] = self.proxy.wait_access(lambda e: e.get("sni") == "localhost")
        self.assertGreater(e["bytes_up"], BIG, e)
        self.assertLess(e["bytes_up"], BIG + 4096, e)  # + request head
        self.assertEqual(e["close"], "client_close", e)

    def test_download_64mib_with_curl(self):
        path = os.path.join(self.tmp, "download.bin")
        r = curl(["-o", path] + curl_args("localhost", self.port, "/bytes/%d" % BIG,
                                          self.ca.cert), timeout=150)
        self.assertEqual(r.returncode, 0, "curl: %s\n%s" % (r.stderr, self.proxy.diag()))
        self.assertEqual(file_size_and_sha256(path), (BIG, backend_mod.pattern_sha256(BIG)))
        self.http.wait_event(r"^BYTES_DONE .* sent=%d$" % BIG)
        [e] = self.proxy.wait_access(lambda e: e.get("sni") == "localhost")
        self.assertGreater(e["bytes_down"], BIG, e)
        self.assertLess(e["bytes_down"], BIG + 4096, e)  # + response head

    def test_echo_64mib_both_ways_at_once(self):
        with tls_connect(self.port, "echo.test", self.ca.cert, timeout=60) as s:
            sent, echoed, n = duplex_exchange(s, backend_mod.pattern_chunks(BIG), BIG)
            self.assertEqual(n, BIG)
            self.assertEqual(sent, backend_mod.pattern_sha256(BIG))
            self.assertEqual(echoed, sent)
            s.unwrap()
        [e] = self.proxy.wait_access(lambda e: e.get("sni") == "echo.test")
        self.assertEqual((e["bytes_up"], e["bytes_down"]), (BIG, BIG), e)
        self.echo.wait_event(r"^ECHO_CLOSED .* bytes=%d reason=eof$" % BIG)

    def test_echo_16mib_both_ways_tls12_each_cipher(self):
        for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                       "ECDHE-ECDSA-CHACHA20-POLY1305"):
            with self.subTest(cipher=cipher):
                size = 16 * MIB
                with tls_connect(self.port, "echo.test", self.ca.cert, timeout=60,
                                 maximum=ssl.TLSVersion.TLSv1_2, ciphers=cipher) as s:
                    self.assertEqual((s.version(), s.cipher()[0]), ("TLSv1.2", cipher))
                    sent, echoed, n = duplex_exchange(s, backend_mod.pattern_chunks(size), size)
                    self.assertEqual((n, echoed), (size, sent))
                    s.unwrap()
                [e] = self.proxy.wait_access(
                    lambda e: e.get("sni") == "echo.test" and e.get("cipher") == cipher)
                self.assertEqual((e["version"], e["bytes_up"], e["bytes_down"], e["close"]),
                                 ("TLSv1.2", size, size, "client_close"), e)

    def test_200_concurrent_connections(self):
        n_conns, size = 200, 16 * 1024
        barrier = threading.Barrier(n_conns)
        errors = []
        lock = threading.Lock()
        ok = [0]

        def client(i):
            payload = payload_for(i, size)
            try:
                with tls_connect(self.port, "echo.test", self.ca.cert, timeout=60) as s:
                    barrier.wait(90)  # every connection is up before any data flows
                    s.sendall(payload)
                    got = bytearray()
                    while len(got) < size:
                        d = s.recv(size - len(got))
                        if not d:
                            break
                        got += d
                    if bytes(got) != payload:
                        raise AssertionError("conn %d: got %d bytes, mismatch" % (i, len(got)))
                    s.unwrap()
                with lock:
                    ok[0] += 1
            except threading.BrokenBarrierError:
                with lock:
                    errors.append("conn %d: barrier broken (another client failed)" % i)
            except Exception as e:  # noqa: BLE001 - collected and reported below
                barrier.abort()
                with lock:
                    errors.append("conn %d: %s: %s" % (i, type(e).__name__, e))

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n_conns)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 150
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        hung = sum(t.is_alive() for t in threads)
        real = [e for e in errors if "barrier broken" not in e]
        self.assertEqual((hung, real or errors[:5]), (0, []),
                         "%d ok, %d hung\n%s" % (ok[0], hung, self.proxy.diag()))
        self.assertEqual(ok[0], n_conns)
        entries = self.proxy.wait_access(lambda e: e.get("sni") == "echo.test", count=n_conns,
                                         timeout=60)
        self.assertEqual(len(entries), n_conns)
        bad = [e for e in entries if (e["bytes_up"], e["bytes_down"], e["close"])
               != (size, size, "client_close")]
        self.assertEqual(bad, [])


if __name__ == "__main__":
    unittest.main()
