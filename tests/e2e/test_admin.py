"""The admin endpoint: /metrics checked against what the test did, /healthz, and /ready turning
503 while the proxy drains (so load balancers stop sending)."""

import os
import signal
import socket
import unittest

from harness import curl, curl_args, HttpConn, LocalhostTestCase, metric, scrape, tls_connect


class AdminTest(LocalhostTestCase):
    def start(self, *extra):
        return self.start_quick_admin(self.leaf, *extra)

    def test_metrics_count_what_happened(self):
        proxy, admin = self.start()
        for _ in range(3):
            r = curl(curl_args("localhost", proxy.port, "/bytes/1000", self.ca.cert) + ["-o", os.devnull])
            self.assertEqual(r.returncode, 0, r.stderr)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"this is not TLS\r\n\r\n" * 10)
            try:
                s.recv(100)  # the proxy closes it (a reset: it did not read all of the garbage)
            except ConnectionResetError:
                pass
        proxy.wait_access(count=4)
        status, text = scrape(admin)
        self.assertEqual(status, 200)
        self.assertEqual(metric(text, "ztproxy_connections_total"), 4)
        self.assertEqual(metric(text, "ztproxy_handshakes_total", result="ok"), 3)
        self.assertEqual(metric(text, "ztproxy_handshakes_total", result="failed"), 1)
        self.assertEqual(metric(text, "ztproxy_connections_active"), 0)
        self.assertEqual(metric(text, "ztproxy_handshake_failures_total", reason="not_tls"), 1, text)
        # curl ends its connections first (it read the whole response): client_close.
        closed = {r: metric(text, "ztproxy_connections_closed_total", reason=r)
                  for r in ("client_close", "backend_close", "handshake_failed")}
        self.assertEqual(closed["client_close"] + closed["backend_close"], 3, text)
        self.assertEqual(closed["handshake_failed"], 1)
        self.assertEqual(metric(text, "ztproxy_backend_connect_duration_seconds_count"), 3)
        self.assertEqual(metric(text, "ztproxy_backend_connect_duration_seconds_bucket", le="+Inf"), 3)
        self.assertGreater(metric(text, "ztproxy_backend_connect_duration_seconds_sum"), 0)
        self.assertEqual(metric(text, "ztproxy_connections_refused_total", reason="max_connections"), 0)
        relayed = 3
        path = "kernel" if os.path.exists("/proc/net/tls_stat") else "userspace"
        self.assertGreater(metric(text, "ztproxy_plaintext_bytes_total", direction="backend_to_client",
                                  record_path=path), 3000)
        self.assertEqual(metric(text, "ztproxy_plaintext_bytes_total", direction="backend_to_client",
                                record_path="openssl"), 0)
        if os.path.exists("/proc/net/tls_stat"):
            self.assertEqual(metric(text, "ztproxy_ktls_installs_total"), relayed)
        else:
            self.assertEqual(metric(text, "ztproxy_ktls_fallbacks_total", reason="no_kernel_support"), relayed)
        self.assertEqual(scrape(admin, "/healthz"), (200, "ok\n"))
        self.assertEqual(scrape(admin, "/nope")[0], 404)

    def test_ready_turns_503_while_draining(self):
        proxy, admin = self.start("--drain-timeout", "30s")
        self.assertEqual(scrape(admin, "/ready"), (200, "ready\n"))
        idle = tls_connect(proxy.port, "localhost", self.ca.cert)  # keeps the drain going
        self.addCleanup(idle.close)
        HttpConn(idle).request("GET", "/", "localhost")
        proxy.send_signal(signal.SIGTERM)
        proxy.wait_line("stderr", r"draining")
        self.assertEqual(scrape(admin, "/ready"), (503, "draining\n"))
        self.assertEqual(scrape(admin, "/healthz"), (200, "ok\n"))


if __name__ == "__main__":
    unittest.main()
