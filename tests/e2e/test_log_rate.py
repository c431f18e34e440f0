"""Log-rate caps with the real binary: events any client can cause at will reach the operational log
at most at the rate README promises, while every one of them is still counted in its metric (and
the lines held back are accounted for in the next line let through).

  * a refused client certificate: at most 10 `warn` lines a second per worker, then a count of
    the lines held back (README, Client certificates);
  * connections refused at accept by a limit: logged at most once a second per worker (README,
    Limits);
  * admin requests refused for want of a token: at most 5 lines a second (README, The admin
    endpoint).

Each test floods N events as fast as one client can, and bounds the lines by the number of
one-second windows the flood can have touched: floor(elapsed) + 1, with `elapsed` measured around
the whole flood, so a slow machine widens the bound but never fails the test. N is chosen far
above that bound, so a cap that lets every event through fails the test. The proxies run one
worker: the caps are per worker.

Not here: the `key_update_unsupported` line (at most one per 10 s per worker) needs a kernel whose
kTLS refuses to rekey (EBUSY), so no client can cause it on a host without kTLS; its cap and
counter are pinned by tests/unit/client_records_test.cpp.
"""

import math
import os
import re
import socket
import ssl
import time
import unittest

from harness import CertAuthority, LocalhostTestCase, client_context, metric, scrape, wait_until

TOKEN = "5e0c2b7d9a1f3e6c8b4d2a0f7e9c1b3d"


def windows(t0, t1):
    """How many one-second limiter windows events between t0 and t1 can have opened."""
    return math.floor(t1 - t0) + 1


class LogRateTest(LocalhostTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client_ca = CertAuthority(os.path.join(cls.class_tmp, "client-pki"), name="ztproxy e2e client CA")

    def start(self, *extra):
        backend = self.start_backend("http")
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", backend.address,
                                  "--cert", self.leaf.cert, "--key", self.leaf.key, "--workers", "1",
                                  "--admin", "127.0.0.1:0"] + list(extra))
        return proxy, proxy.admin_address()

    def lines(self, proxy, pattern):
        return [m for m in (re.search(pattern, l) for l in proxy.err.snapshot()) if m]

    def flood(self, proxy, n, event, counted, pattern, per_second):
        """`n` events as fast as one client can; once `counted()` (waits until every event is
        counted), the lines matching `pattern` are at most `per_second` per window touched, and the
        first `per_second` got through."""
        t0 = time.monotonic()
        for _ in range(n):
            event()
        counted()
        t1 = time.monotonic()
        logged = self.lines(proxy, pattern)
        cap = per_second * windows(t0, t1)
        self.assertLessEqual(len(logged), cap, "%d events in %.2fs logged %d lines (at most %d)"
                             % (n, t1 - t0, len(logged), cap))
        self.assertGreaterEqual(len(logged), per_second, proxy.diag())  # the first ones do reach the log
        return logged

    def wait_metric(self, admin, name, want, **labels):
        wait_until(lambda: metric(scrape(admin)[1], name, **labels) >= want, 20,
                   "%s%r to reach %d" % (name, labels, want))
        self.assertEqual(metric(scrape(admin)[1], name, **labels), want)

    def test_refused_client_certificates_log_at_most_10_lines_a_second(self):
        n = 100
        proxy, admin = self.start("--client-ca", self.client_ca.cert)
        pattern = r"client certificate refused \(missing\)(?:.*\((\d+) more since the last such line\))?"

        def refused_handshake():
            # TLS 1.2: the server's verdict on the (missing) certificate ends the handshake itself.
            ctx = client_context(self.ca.cert, maximum=ssl.TLSVersion.TLSv1_2)
            raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=15)
            with raw:
                with self.assertRaises(ssl.SSLError):
                    ctx.wrap_socket(raw, server_hostname="localhost").close()

        logged = self.flood(proxy, n, refused_handshake,
                            lambda: self.wait_metric(admin, "ztproxy_client_cert_failures_total", n, reason="missing"),
                            pattern, 10)
        # A new window: the next refusal is logged with the count of the lines held back.
        time.sleep(1.1)
        refused_handshake()
        self.wait_metric(admin, "ztproxy_client_cert_failures_total", n + 1, reason="missing")
        wait_until(lambda: len(self.lines(proxy, pattern)) > len(logged), 10, "the line after the flood")
        logged = self.lines(proxy, pattern)
        self.assertIsNotNone(logged[-1].group(1), "the line after the flood says how many were held back")
        held = sum(int(m.group(1) or 0) for m in logged)
        self.assertEqual(len(logged) + held, n + 1, "every refusal is either logged or counted as held back")
        # The access log still has every one.
        proxy.wait_access(lambda e: e["close"] == "client_cert_rejected", count=n + 1)

    def test_refusals_at_accept_log_at_most_once_a_second(self):
        n = 200
        proxy, admin = self.start("--max-connections-per-source", "1", "--handshake-timeout", "60s")
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.2", 0))
        holder.connect(("127.0.0.1", proxy.port))
        self.wait_metric(admin, "ztproxy_connections_active", 1)
        pattern = r"client 127\.0\.0\.2 holds max_connections_per_source = 1: .*\((\d+) refused so far\)"

        def refused_connect():
            with socket.socket() as s:
                s.bind(("127.0.0.2", 0))
                s.connect(("127.0.0.1", proxy.port))

        logged = self.flood(proxy, n, refused_connect,
                            lambda: self.wait_metric(admin, "ztproxy_connections_refused_total", n,
                                                     reason="max_connections_per_source"),
                            pattern, 1)
        time.sleep(1.1)
        refused_connect()
        self.wait_metric(admin, "ztproxy_connections_refused_total", n + 1, reason="max_connections_per_source")
        m = wait_until(lambda: len(self.lines(proxy, pattern)) > len(logged) and self.lines(proxy, pattern)[-1],
                       10, "the line after the flood")
        self.assertEqual(int(m.group(1)), n + 1, "the next line counts every refusal so far")
        self.assertEqual(metric(scrape(admin)[1], "ztproxy_connections_active"), 1)

    def test_unauthorized_admin_requests_log_at_most_5_lines_a_second(self):
        n = 60
        token_file = os.path.join(self.tmp, "admin.token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        proxy, admin = self.start("--admin-token-file", token_file)
        host, port = admin.rsplit(":", 1)
        pattern = r"POST /reload from 127\.0\.0\.1:\d+ refused: no valid bearer token(?: \((\d+) similar lines suppressed\))?"

        def refused_reload():
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"POST /reload HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer wrong\r\n\r\n")
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
            self.assertTrue(answer.startswith(b"HTTP/1.1 401 "), answer)

        # Each refusal is answered: the admin thread has counted and (maybe) logged it by then.
        logged = self.flood(proxy, n, refused_reload,
                            lambda: self.assertEqual(metric(scrape(admin)[1], "ztproxy_admin_requests_refused_total",
                                                            reason="unauthorized"), n),
                            pattern, 5)
        time.sleep(1.1)
        refused_reload()
        wait_until(lambda: len(self.lines(proxy, pattern)) > len(logged), 10, "the line after the flood")
        logged = self.lines(proxy, pattern)
        self.assertIsNotNone(logged[-1].group(1), "the line after the flood says how many were held back")
        self.assertEqual(len(logged) + sum(int(m.group(1) or 0) for m in logged), n + 1,
                         "every refusal is either logged or counted as held back")
        self.assertEqual(metric(scrape(admin)[1], "ztproxy_admin_requests_refused_total", reason="unauthorized"),
                         n + 1)


if __name__ == "__main__":
    unittest.main()
