"""The admin endpoint: /metrics checked against what the test did, /healthz, and /ready turning
503 while the proxy drains (so load balancers stop sending); then what keeps it up and closed:
slow clients and a full connection table do not stop /healthz, the bearer token guards
POST /reload (and /metrics when asked), and the Unix socket serves the same requests."""

import os
import select
import signal
import socket
import stat
import subprocess
import threading
import time
import unittest

from harness import (curl, curl_args, HeldPolicyRead, HttpConn, LocalhostTestCase, metric, policy_toml,
                     require_tool, scrape, tls_connect, wait_until, ztproxy_bin)


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
        # 64 KiB pipes as root: the kernel sizes every one (README "Relay memory bounds").
        self.assertEqual(metric(text, "ztproxy_pipe_resize_failures_total"), 0)
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


TOKEN = "7f3c9a1e5b2d4f608a1c3e5f7b9d0e2a"


def probe(addr, path="/healthz", headers=(), method="GET", timeout=5.0):
    """One raw request on a fresh connection: (status, body, seconds from connect to the last byte)."""
    host, port = addr.rsplit(":", 1)
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(("%s %s HTTP/1.1\r\nHost: admin\r\n%s\r\n"
                   % (method, path, "".join(h + "\r\n" for h in headers))).encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - start
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split(" ")[1]), body, elapsed


def closed_by_peer(sock):
    """True once the server closed this connection (EOF or reset), without waiting."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def read_to_end(sock):
    """Everything the server sends until it closes; b"" when it closes unanswered (EOF or reset)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


class AdminHardeningTest(LocalhostTestCase):
    def start_admin_policy(self, admin, **kw):
        backend = self.start_backend("http")
        admin = dict(admin)
        admin.setdefault("address", "127.0.0.1:0")
        text = policy_toml([{"name": "public", "certs": [("main", self.leaf, None)]}],
                           [{"name": "app", "addresses": [backend.address]}],
                           [{"backend": "app", "default": True}], sections={"admin": admin})
        proxy = self.start_policy_proxy(text, **kw)
        return proxy, proxy.admin_address()

    def token_file(self, token=TOKEN):
        path = os.path.join(self.tmp, "admin.token")
        with open(path, "w") as f:
            f.write(token + "\n")
        return path

    def test_healthz_answers_while_100_clients_drip_and_the_drippers_meet_the_deadline(self):
        # max_connections above the number of drippers: nothing is evicted, only the event loop
        # and the whole-request deadline keep /healthz answering.
        proxy, admin = self.start_admin_policy({"request_timeout": "3s", "max_connections": 256})
        host, port = admin.rsplit(":", 1)
        drippers = [socket.create_connection((host, int(port)), timeout=10) for _ in range(100)]
        for s in drippers:
            self.addCleanup(s.close)
        request = b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"
        stop = threading.Event()

        def drip():
            # One byte per connection every 200 ms: each read gets data long before any per-read
            # timeout, and no request is ever complete before the deadline.
            for i in range(len(request) - 4):
                for s in drippers:
                    try:
                        s.send(request[i:i + 1])
                    except OSError:
                        pass  # closed by the server: that is the point
                if stop.wait(0.2):
                    return

        dripper = threading.Thread(target=drip)
        dripper.start()
        self.addCleanup(dripper.join)
        self.addCleanup(stop.set)
        for _ in range(10):
            status, body, elapsed = probe(admin)
            self.assertEqual((status, body), (200, "ok\n"))
            self.assertLess(elapsed, 0.1, "a /healthz probe waited behind the dripping clients")
        wait_until(lambda: all(closed_by_peer(s) for s in drippers), 30,
                   "the server closes every dripping client at its whole-request deadline")
        stop.set()
        _, text = scrape(admin)
        self.assertEqual(metric(text, "ztproxy_admin_connections_dropped_total", reason="deadline"), 100, text)
        self.assertEqual(metric(text, "ztproxy_admin_connections_dropped_total", reason="evicted"), 0)

    def test_a_full_connection_table_evicts_the_oldest_unfinished_request(self):
        proxy, admin = self.start_admin_policy({"max_connections": 4, "request_timeout": "60s"})
        host, port = admin.rsplit(":", 1)
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(4)]
        for s in idle:
            self.addCleanup(s.close)
        self.assertEqual(probe(admin)[:2], (200, "ok\n"))
        # The first idle client was the oldest request still unfinished: it made room.
        wait_until(lambda: closed_by_peer(idle[0]), 10, "the oldest idle connection is closed")
        self.assertFalse(any(closed_by_peer(s) for s in idle[1:]))
        status, text = scrape(admin)
        self.assertEqual(status, 200)
        self.assertEqual(metric(text, "ztproxy_admin_connections_dropped_total", reason="evicted"), 1, text)
        self.assertEqual(metric(text, "ztproxy_admin_connections"), 4)  # three idle and the scrape

    def test_at_the_cap_new_connections_are_refused_while_every_open_one_is_answered(self):
        # The only slot holds a POST /reload whose reload is held on the policy read: it is being
        # answered, so nothing can be evicted for a newcomer, which is closed unanswered (full).
        proxy, admin = self.start_admin_policy({"max_connections": 1, "request_timeout": "30s"})
        held = HeldPolicyRead(os.path.join(self.tmp, "policy.toml"))
        self.addCleanup(held.release)
        host, port = admin.rsplit(":", 1)
        reload = socket.create_connection((host, int(port)), timeout=20)
        self.addCleanup(reload.close)
        reload.sendall(b"POST /reload HTTP/1.1\r\nHost: admin\r\n\r\n")
        held.wait_reading()  # the admin thread submitted it: the connection waits for the outcome
        for _ in range(3):
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
                self.assertEqual(read_to_end(s), b"", "a connection over the cap was answered")
        self.assertFalse(closed_by_peer(reload), "the reload being answered was closed for a newcomer")
        held.release()
        answer = read_to_end(reload).decode()
        self.assertTrue(answer.startswith("HTTP/1.1 200 "), answer)
        self.assertTrue(answer.endswith("\r\n\r\nreload applied\n"), answer)
        _, text = scrape(admin)
        self.assertEqual(metric(text, "ztproxy_admin_connections_dropped_total", reason="full"), 3, text)
        self.assertEqual(metric(text, "ztproxy_admin_connections_dropped_total", reason="evicted"), 0)
        self.assertEqual(metric(text, "ztproxy_reloads_total", result="ok"), 1)

    def test_oversized_requests_are_refused(self):
        proxy, admin = self.start_admin_policy({"max_request": "1KiB"})
        status, _, _ = probe(admin, headers=["X-Padding: " + "a" * 2000])
        self.assertEqual(status, 431)
        _, text = scrape(admin)
        self.assertEqual(metric(text, "ztproxy_admin_requests_refused_total", reason="too_large"), 1, text)

    def test_the_token_guards_reload_and_metrics_but_never_the_probes(self):
        proxy, admin = self.start_admin_policy({"token_file": self.token_file(), "metrics_require_token": True})
        good = ["Authorization: Bearer " + TOKEN]
        for headers in ([], ["Authorization: Bearer " + TOKEN[:-1] + "0"], ["Authorization: Basic " + TOKEN]):
            self.assertEqual(probe(admin, "/reload", headers, "POST")[0], 401, headers)
            self.assertEqual(probe(admin, "/metrics", headers)[0], 401, headers)
        self.assertEqual(probe(admin, "/healthz")[:2], (200, "ok\n"))
        self.assertEqual(probe(admin, "/ready")[:2], (200, "ready\n"))
        status, body, _ = probe(admin, "/reload", good, "POST")
        self.assertEqual((status, body), (200, "reload applied\n"))
        status, text, _ = probe(admin, "/metrics", good)
        self.assertEqual(status, 200)
        self.assertEqual(metric(text, "ztproxy_admin_requests_refused_total", reason="unauthorized"), 6, text)
        # The file is read again on reload: a rotated token replaces the old one.
        rotated = "0d6e1b2c3a4f5e6d7c8b9a0f1e2d3c4b"
        self.token_file(rotated)
        self.assertEqual(probe(admin, "/reload", good, "POST")[:2], (200, "reload applied\n"))
        self.assertEqual(probe(admin, "/reload", good, "POST")[0], 401)
        self.assertEqual(probe(admin, "/reload", ["Authorization: Bearer " + rotated], "POST")[0], 200)
        proxy.wait_line("stderr", r"POST /reload from 127\.0\.0\.1:\d+ refused")  # refusals are logged...
        log = "\n".join(proxy.err.snapshot() + proxy.out.snapshot())
        for secret in (TOKEN, TOKEN[:-1] + "0", rotated):
            self.assertNotIn(secret, log)  # ...never with the token, right or wrong

    def test_admin_token_file_flag_in_quick_mode(self):
        proxy, admin = self.start_quick_admin(self.leaf, "--admin-token-file", self.token_file())
        self.assertEqual(scrape(admin, "/reload", "POST")[0], 401)
        self.assertEqual(scrape(admin, "/metrics")[0], 200)  # metrics_require_token is off
        status, body, _ = probe(admin, "/reload", ["Authorization: Bearer " + TOKEN], "POST")
        self.assertEqual(status, 409)  # authorised; quick mode has no policy file to reload
        self.assertIn("nothing to reload", body)

    def test_unix_socket_serves_healthz_metrics_and_reload(self):
        require_tool("curl")
        path = os.path.join(self.tmp, "admin.sock")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)  # left behind, as by a process that was killed
        stale.close()
        proxy, _ = self.start_admin_policy({"unix_socket": path, "unix_socket_mode": "0660",
                                            "address": "127.0.0.1:0"})
        proxy.wait_line("stderr", r"admin endpoint on unix:" + path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))

        def over_unix(url_path, method="GET"):
            p = subprocess.run(["curl", "-sS", "--max-time", "30", "--unix-socket", path, "-X", method,
                                "-w", "\n%{http_code}", "http://admin" + url_path],
                               capture_output=True, timeout=60, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            body, _, status = p.stdout.rpartition("\n")
            return int(status), body

        self.assertEqual(over_unix("/healthz"), (200, "ok\n"))
        status, text = over_unix("/metrics")
        self.assertEqual(status, 200)
        self.assertGreaterEqual(metric(text, "ztproxy_admin_connections_total"), 2)
        self.assertEqual(over_unix("/reload", "POST"), (200, "reload applied\n"))

    def test_a_unix_socket_path_held_by_a_file_is_not_replaced(self):
        path = os.path.join(self.tmp, "admin.sock")
        with open(path, "w") as f:
            f.write("not a socket")
        backend = self.start_backend("http")
        text = policy_toml([{"name": "public", "certs": [("main", self.leaf, None)]}],
                           [{"name": "app", "addresses": [backend.address]}],
                           [{"backend": "app", "default": True}], sections={"admin": {"unix_socket": path}})
        p = subprocess.run([ztproxy_bin(), "run", "-c", self.write_policy(text)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("the path exists and is not a socket", p.stderr)
        with open(path) as f:
            self.assertEqual(f.read(), "not a socket")


if __name__ == "__main__":
    unittest.main()
