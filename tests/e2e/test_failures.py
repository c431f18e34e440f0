"""ztproxy end to end, when things go wrong: a backend that is down or never answers, clients that
vanish (RST) mid-stream, bytes that are not TLS, clients that never finish the handshake or go
idle, and signals. In every case the proxy must close the affected connection promptly (no hang), log why,
release the other side, and keep serving the next client.
"""

import hashlib
import os
import re
import signal
import socket
import ssl
import threading
import time
import unittest

import backend as backend_mod
from harness import (E2ETestCase, CertAuthority, HttpConn, Proxy, connect_and_wait_close, curl,
                     curl_args, dead_port, open_fd_count, policy_toml, set_linger_reset,
                     tls_close_kind, tls_connect, wait_until)

CLEAN_CLOSES = ("close_notify",)  # or "alert:..." (checked with startswith)


def is_clean_tls_close(kind):
    return kind in CLEAN_CLOSES or kind.startswith("alert:")


def raw_exchange(port, data, timeout=15.0, half_close=False):
    """Sends raw bytes, reads until the proxy closes. Returns (bytes received, how it ended:
    'eof' | 'reset' | 'timeout')."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return b"", "reset"
        got = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    return got, "eof"
                got += d
        except socket.timeout:
            return got, "timeout"
        except ConnectionResetError:
            return got, "reset"


class UnansweredBackend:
    """A loopback address where connect() hangs instead of being refused: a listening socket with
    backlog 0 whose accept queue already holds one connection nobody accepts. The kernel drops
    further SYNs without an answer, so a connecting side retransmits until its own deadline."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.filler = socket.create_connection(self.listener.getsockname(), timeout=5)

    def syn_sent(self):
        """Whether some socket is in SYN_SENT towards this address (/proc/net/tcp: state 02)."""
        remote = "0100007F:%04X" % self.listener.getsockname()[1]
        with open("/proc/net/tcp") as f:
            next(f)
            return any(fields[2:4] == [remote, "02"] for fields in (l.split() for l in f))

    def connect_hangs(self, seconds):
        try:
            socket.create_connection(self.listener.getsockname(), timeout=seconds).close()
        except socket.timeout:
            return True
        except OSError:
            return False
        return False

    def close(self):
        self.filler.close()
        self.listener.close()


class FailuresTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ca = CertAuthority(os.path.join(cls.class_tmp, "pki"))
        cls.leaf = cls.ca.issue("localhost", "ec", dns=["localhost", "down.test", "echo.test"])

    def start_routed_proxy(self, http, echo=None, down_port=None):
        """One listener: SNI down.test -> a dead port, echo.test -> echo, default -> http."""
        backends = [{"name": "app", "addresses": [http.address]}]
        routes = []
        if down_port:
            backends.append({"name": "dead", "addresses": ["127.0.0.1:%d" % down_port]})
            routes.append({"server_names": ["down.test"], "backend": "dead"})
        if echo:
            backends.append({"name": "echo", "addresses": [echo.address]})
            routes.append({"server_names": ["echo.test"], "backend": "echo"})
        routes.append({"default": True, "backend": "app"})
        return self.start_policy_proxy(policy_toml(
            listeners=[{"name": "main", "certs": [("main", self.leaf, None)]}],
            backends=backends, routes=routes))

    def assert_serves(self, proxy, what):
        """A fresh client gets the backend's page through the proxy."""
        with tls_connect(proxy.port, "localhost", self.ca.cert) as s:
            conn = HttpConn(s)
            conn.request("GET", "/", "localhost")
            r = conn.response()
            self.assertEqual((r.status, r.body), (200, b"ztproxy e2e backend\n"),
                             "after %s\n%s" % (what, proxy.diag()))

    def quick_proxy(self, backend, *extra):
        return self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", backend.address,
                                 "--cert", self.leaf.cert, "--key", self.leaf.key] + list(extra))

    # ------------------------------------------------------------------ backend down

    def test_backend_down_closes_cleanly_and_proxy_keeps_serving(self):
        http = self.start_backend("http")
        proxy = self.start_routed_proxy(http, down_port=dead_port())
        for i in range(3):
            t0 = time.monotonic()
            kind = connect_and_wait_close(proxy.port, "down.test", self.ca.cert, timeout=20)
            self.assertTrue(is_clean_tls_close(kind),
                            "attempt %d: expected close_notify or an alert, got %r after %.1fs\n%s"
                            % (i, kind, time.monotonic() - t0, proxy.diag()))
        # curl must fail fast with a connection-level error, not by hitting its own time limit.
        r = curl(curl_args("down.test", proxy.port, "/", self.ca.cert), timeout=20)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertNotEqual(r.returncode, 28, "curl timed out: %s" % r.stderr)
        entries = proxy.wait_access(lambda e: e.get("sni") == "down.test", count=4)
        self.assertEqual({e["close"] for e in entries}, {"backend_connect_failed"}, entries)
        self.assertEqual({e["bytes_up"] for e in entries} | {e["bytes_down"] for e in entries},
                         {0}, entries)
        self.assert_serves(proxy, "backend_connect_failed")

    def test_backend_connect_timeout_closes_cleanly_and_proxy_keeps_serving(self):
        http = self.start_backend("http")
        hole = UnansweredBackend()
        self.addCleanup(hole.close)
        self.assertTrue(hole.connect_hangs(0.5), "the kernel answered a SYN to a full accept queue")
        proxy = self.start_policy_proxy(policy_toml(
            listeners=[{"name": "main", "certs": [("main", self.leaf, None)]}],
            backends=[{"name": "app", "addresses": [http.address]},
                      {"name": "hole", "addresses": [hole.address]}],
            routes=[{"server_names": ["down.test"], "backend": "hole"},
                    {"default": True, "backend": "app"}],
            sections={"runtime": {"workers": 1}, "limits": {"backend_connect_timeout": "2s"}}))
        outcome = {}

        def hanging_client():
            t0 = time.monotonic()
            outcome["kind"] = connect_and_wait_close(proxy.port, "down.test", self.ca.cert, timeout=20)
            outcome["seconds"] = time.monotonic() - t0

        t = threading.Thread(target=hanging_client, daemon=True)
        t.start()
        # While the proxy's connect hangs, the same (single) worker serves other clients.
        wait_until(hole.syn_sent, 10, "the proxy's connect to the unanswered backend")
        self.assert_serves(proxy, "a backend connect in progress")
        self.assertTrue(hole.syn_sent(), "the connect ended before the other client was served")
        t.join(30)
        self.assertFalse(t.is_alive(), "the client on the unanswered backend was never closed\n%s" % proxy.diag())
        self.assertTrue(is_clean_tls_close(outcome["kind"]),
                        "expected close_notify or an alert, got %r\n%s" % (outcome["kind"], proxy.diag()))
        # Closed at the configured deadline: not at once (that would be a refusal), not much later.
        self.assertGreaterEqual(outcome["seconds"], 1.9, outcome)
        self.assertLess(outcome["seconds"], 10, outcome)
        [e] = proxy.wait_access(lambda e: e.get("sni") == "down.test")
        self.assertEqual(e["close"], "backend_connect_timeout", e)
        self.assertEqual((e["bytes_up"], e["bytes_down"]), (0, 0), e)
        self.assertGreaterEqual(e["duration_ms"], 1900, e)
        proxy.wait_line("stderr", r"backend 'hole' unreachable for client .*: 1 address\(es\) tried, "
                        r"last error: %s: connect timed out" % re.escape(hole.address))
        self.assert_serves(proxy, "backend_connect_timeout")

    def test_request_sent_before_backend_fails_is_not_answered(self):
        # The client sends its request right after the handshake; the backend is down, so the
        # proxy must still close cleanly (and not, e.g., hang holding the request).
        http = self.start_backend("http")
        proxy = self.start_routed_proxy(http, down_port=dead_port())
        try:
            s = tls_connect(proxy.port, "down.test", self.ca.cert)
        except ssl.SSLError as e:
            self.assertTrue(is_clean_tls_close("alert:%s" % e.reason))
        else:
            with s:
                try:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: down.test\r\n\r\n")
                except (ssl.SSLError, OSError):
                    pass  # already closed by the proxy: fine, the close kind is read next
                kind, n = tls_close_kind(s, 20)
                self.assertTrue(is_clean_tls_close(kind) or kind == "reset",
                                "got %r\n%s" % (kind, proxy.diag()))
                self.assertEqual(n, 0)
        proxy.wait_access(lambda e: e.get("close") == "backend_connect_failed")
        self.assert_serves(proxy, "backend_connect_failed with a pending request")

    # ------------------------------------------------------------------ clients vanishing

    def test_client_reset_mid_download_releases_backend(self):
        http = self.start_backend("http")
        proxy = self.start_routed_proxy(http)
        total = 1 << 30  # far more than any buffer between the backend and the client
        s = tls_connect(proxy.port, "localhost", self.ca.cert)
        try:
            conn = HttpConn(s)
            conn.request("GET", "/bytes/%d" % total, "localhost")
            status, _, headers = conn.read_head()
            self.assertEqual(status, 200)
            got = 0
            for piece in conn.read_body_chunks(total):
                got += len(piece)
                if got >= 4 * 1024 * 1024:
                    break
            set_linger_reset(s)
        finally:
            s.close()  # no close_notify, and SO_LINGER 0: the kernel sends an RST
        # The proxy must close its backend connection: the backend's writes then fail.
        ev = http.wait_event(r"^BYTES_ABORTED ", timeout=20)
        self.assertIsNotNone(ev)
        self.assertFalse(http.events("BYTES_DONE"), "the backend sent all %d bytes" % total)
        self.assert_serves(proxy, "a client reset mid-download")
        [e] = proxy.wait_access(lambda e: e.get("bytes_down", 0) >= 4 * 1024 * 1024)
        self.assertEqual(e["close"], "client_reset", e)
        self.assertLess(e["bytes_down"], total, e)

    def test_client_reset_mid_upload_releases_backend(self):
        http = self.start_backend("http")
        echo = self.start_backend("echo")
        proxy = self.start_routed_proxy(http, echo=echo)
        s = tls_connect(proxy.port, "echo.test", self.ca.cert)
        try:
            s.sendall(b"x" * (256 * 1024))
            self.assertTrue(s.recv(1))  # data flows end to end
            set_linger_reset(s)
        finally:
            s.close()
        ev = echo.wait_event(r"^ECHO_CLOSED ", timeout=20)
        # Released either way: the backend reads EOF/reset, or (when it was busy echoing) its
        # write hits the closed socket (EPIPE).
        self.assertRegex(ev.string, r"reason=(eof|reset|error:BrokenPipeError)")
        self.assert_serves(proxy, "a client reset mid-upload")
        [e] = proxy.wait_access(lambda e: e.get("sni") == "echo.test")
        self.assertEqual(e["close"], "client_reset", e)

    def test_backend_reset_mid_download_closes_client(self):
        # The other direction: the backend process dies while streaming; the client must see the
        # connection end (not hang), and the proxy must keep serving with a new backend route.
        http = self.start_backend("http")
        victim = self.start_backend("http")
        backends = [{"name": "app", "addresses": [http.address]},
                    {"name": "victim", "addresses": [victim.address]}]
        proxy = self.start_policy_proxy(policy_toml(
            listeners=[{"name": "main", "certs": [("main", self.leaf, None)]}],
            backends=backends,
            routes=[{"server_names": ["echo.test"], "backend": "victim"},
                    {"default": True, "backend": "app"}]))
        with tls_connect(proxy.port, "echo.test", self.ca.cert) as s:
            conn = HttpConn(s)
            conn.request("GET", "/bytes/%d" % (1 << 30), "echo.test")
            self.assertEqual(conn.read_head()[0], 200)
            next(conn.read_body_chunks(1 << 20))
            victim.kill()  # SIGKILL: the kernel resets/closes its sockets
            kind, _ = tls_close_kind(s, 20)
            self.assertNotEqual(kind, "timeout", proxy.diag())
        [e] = proxy.wait_access(lambda e: e.get("sni") == "echo.test")
        self.assertIn(e["close"], ("backend_close", "backend_reset"), e)
        self.assert_serves(proxy, "a backend reset mid-download")

    def test_backend_close_is_forwarded_as_close_notify(self):
        # The backend ends the response by closing (Connection: close). The client must get every
        # byte and then a close_notify: a bare FIN would look like a truncation attack.
        http = self.start_backend("http")
        proxy = self.start_routed_proxy(http)
        size = 8 * 1024 * 1024
        with tls_connect(proxy.port, "localhost", self.ca.cert) as s:
            conn = HttpConn(s)
            conn.request("GET", "/bytes/%d" % size, "localhost", headers={"Connection": "close"})
            status, _, headers = conn.read_head()
            self.assertEqual((status, int(headers["content-length"])), (200, size))
            h = hashlib.sha256()
            for piece in conn.read_body_chunks(size):
                h.update(piece)
            self.assertEqual(h.hexdigest(), backend_mod.pattern_sha256(size))
            self.assertEqual(conn.buf, b"")
            kind, extra = tls_close_kind(s, 20)
            self.assertEqual((kind, extra), ("close_notify", 0), proxy.diag())
        [e] = proxy.wait_access()
        self.assertEqual(e["close"], "backend_close", e)
        self.assertEqual(e["bytes_down"], conn.head_len + size, e)

    def test_no_fd_leak_after_failures(self):
        http = self.start_backend("http")
        echo = self.start_backend("echo")
        proxy = self.start_routed_proxy(http, echo=echo, down_port=dead_port())
        self.assert_serves(proxy, "start")  # warm up: lazily created resources exist now
        proxy.wait_access(count=1)
        baseline = open_fd_count(proxy.pid)
        rounds = 20
        for _ in range(rounds):
            raw_exchange(proxy.port, b"GET / HTTP/1.0\r\n\r\n")           # not TLS
            connect_and_wait_close(proxy.port, "down.test", self.ca.cert)  # backend down
            s = tls_connect(proxy.port, "echo.test", self.ca.cert)         # client reset
            s.sendall(b"x" * 100000)
            s.recv(1)
            set_linger_reset(s)
            s.close()
            self.assert_serves(proxy, "a round of failures")               # normal
        proxy.wait_access(count=1 + 4 * rounds)
        wait_until(lambda: open_fd_count(proxy.pid) <= baseline + 2, 10,
                   "ztproxy's fd count (now %d) to return to its baseline %d"
                   % (open_fd_count(proxy.pid), baseline))

    # ------------------------------------------------------------------ not TLS / slow TLS

    def test_handshake_garbage_is_closed_and_proxy_keeps_serving(self):
        http = self.start_backend("http")
        proxy = self.start_routed_proxy(http)
        cases = [
            ("plain HTTP", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", False),
            ("random bytes", os.urandom(4096), False),
            ("TLS record header, garbage body", b"\x16\x03\x01\x00\x40" + b"\xff" * 64, False),
            ("half a record, then FIN", b"\x16\x03\x01\x02\x00\x01\x00\x01", True),
        ]
        for what, data, half_close in cases:
            with self.subTest(what):
                got, how = raw_exchange(proxy.port, data, half_close=half_close)
                self.assertNotEqual(how, "timeout", "%s: connection left open\n%s"
                                    % (what, proxy.diag()))
                if got:  # whatever comes back must be a TLS alert record, never plaintext
                    self.assertEqual(got[0], 0x15, "%s: got %r" % (what, got[:32]))
        entries = proxy.wait_access(count=len(cases))
        self.assertEqual({e["close"] for e in entries}, {"handshake_failed"}, entries)
        self.assertEqual({e["bytes_up"] for e in entries}, {0}, entries)
        self.assert_serves(proxy, "garbage handshakes")

    def test_handshake_timeout(self):
        http = self.start_backend("http")
        proxy = self.quick_proxy(http, "--handshake-timeout", "1s")
        t0 = time.monotonic()
        got, how = raw_exchange(proxy.port, b"", timeout=20)  # connect and say nothing
        self.assertNotEqual(how, "timeout", "silent client not closed\n%s" % proxy.diag())
        got, how = raw_exchange(proxy.port, b"\x16\x03\x01\x02\x00", timeout=20)  # stall mid-hello
        self.assertNotEqual(how, "timeout", "stalled client not closed\n%s" % proxy.diag())
        self.assertLess(time.monotonic() - t0, 20)
        entries = proxy.wait_access(count=2)
        self.assertEqual({e["close"] for e in entries}, {"handshake_timeout"}, entries)
        self.assert_serves(proxy, "handshake timeouts")

    def test_idle_timeout_closes_cleanly(self):
        http = self.start_backend("http")
        proxy = self.quick_proxy(http, "--idle-timeout", "1s")
        with tls_connect(proxy.port, "localhost", self.ca.cert) as s:
            conn = HttpConn(s)
            conn.request("GET", "/", "localhost")
            self.assertEqual(conn.response().status, 200)
            kind, _ = tls_close_kind(s, 20)  # then stay silent
            self.assertTrue(is_clean_tls_close(kind), "got %r\n%s" % (kind, proxy.diag()))
        [e] = proxy.wait_access()
        self.assertEqual(e["close"], "idle_timeout", e)

    # ------------------------------------------------------------------ signals

    def test_sigterm_and_sigint_drain_then_exit_zero(self):
        http = self.start_backend("http")
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=sig.name):
                proxy = Proxy(["run", "--listen", "127.0.0.1:0", "--backend", http.address,
                               "--cert", self.leaf.cert, "--key", self.leaf.key, "--drain-timeout", "2s"])
                self.addCleanup(proxy.stop)
                self.assert_serves(proxy, "start")
                idle = tls_connect(proxy.port, "localhost", self.ca.cert)
                self.addCleanup(idle.close)
                busy = tls_connect(proxy.port, "localhost", self.ca.cert)
                self.addCleanup(busy.close)
                conn = HttpConn(busy)
                conn.request("GET", "/bytes/%d" % (4 * 1024 * 1024), "localhost")
                _, _, headers = conn.read_head()
                # The client keeps reading through the drain (a loaded machine must not turn the
                # time spent probing for refusals into a transfer cut at the deadline).
                transfer = {}

                def read_body():
                    try:
                        transfer["got"] = sum(len(c) for c in
                                              conn.read_body_chunks(int(headers["content-length"])))
                    except (OSError, ssl.SSLError) as e:
                        transfer["error"] = e
                        transfer["at"] = time.monotonic()
                reader = threading.Thread(target=read_body, daemon=True)
                reader.start()
                proxy.send_signal(sig)
                t_signal = time.monotonic()
                proxy.wait_line("err", r"draining", what="the drain announcement")
                # New connections are refused once the listeners are closed...
                deadline = time.monotonic() + 10
                accepted_while_draining = 0
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
                    except (ConnectionRefusedError, ConnectionResetError):
                        # Refused, or reset by the listener closing while the handshake was queued
                        # on it: either way not served.
                        break
                    self.assertLess(time.monotonic(), deadline, "still accepting while draining")
                    accepted_while_draining += 1
                    time.sleep(0.05)
                t_refused = time.monotonic() - t_signal
                # ...the transfer in flight completes...
                reader.join(30)
                if "error" in transfer:
                    raise AssertionError("transfer in flight cut %.2fs after the signal (refused after %.2fs, %d "
                                         "accepted before): %r\n%s" % (transfer["at"] - t_signal, t_refused,
                                                                       accepted_while_draining, transfer["error"],
                                                                       proxy.diag()))
                self.assertEqual(transfer.get("got"), 4 * 1024 * 1024, proxy.diag())
                # ...and the idle connection is ended at the deadline with close_notify, then exit 0.
                kind, _ = tls_close_kind(idle, 10)
                self.assertTrue(is_clean_tls_close(kind), "got %r\n%s" % (kind, proxy.diag()))
                rc = proxy.wait_exit(10)
                self.assertEqual(rc, 0, "%s: exit %r\n%s" % (sig.name, rc, proxy.diag()))

    def test_a_second_signal_ends_the_drain_at_once(self):
        http = self.start_backend("http")
        proxy = Proxy(["run", "--listen", "127.0.0.1:0", "--backend", http.address,
                       "--cert", self.leaf.cert, "--key", self.leaf.key, "--drain-timeout", "10m"])
        self.addCleanup(proxy.stop)
        self.assert_serves(proxy, "start")
        idle = tls_connect(proxy.port, "localhost", self.ca.cert)
        self.addCleanup(idle.close)
        proxy.send_signal(signal.SIGTERM)
        proxy.wait_line("err", r"draining", what="the drain announcement")
        proxy.send_signal(signal.SIGTERM)
        kind, _ = tls_close_kind(idle, 10)
        self.assertTrue(is_clean_tls_close(kind), "got %r\n%s" % (kind, proxy.diag()))
        self.assertEqual(proxy.wait_exit(10), 0, proxy.diag())


if __name__ == "__main__":
    unittest.main()
