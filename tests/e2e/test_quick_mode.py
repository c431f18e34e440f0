"""ztproxy end to end, quick mode (`ztproxy run --listen … --backend … --cert … --key …`), the
JSON access log, and the small CLI contracts (--version, bad arguments fail fast).
"""

import json
import os
import re
import subprocess
import unittest

from harness import (curl, curl_args, FORCED_RECORD_PATH, HttpConn, LocalhostTestCase, tls_connect,
                     ztproxy_bin)

ACCESS_KEYS = {"client", "listener", "sni", "alpn", "version", "cipher", "backend", "rx_path",
               "tx_path", "bytes_up", "bytes_down", "duration_ms", "close"}


class QuickModeTest(LocalhostTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rsa = cls.ca.issue("localhost-rsa", "rsa", dns=["localhost"])

    def quick_args(self, backend, leaf=None, *extra):
        leaf = leaf or self.leaf
        return ["run", "--listen", "127.0.0.1:0", "--backend", backend.address,
                "--cert", leaf.cert, "--key", leaf.key] + list(extra)

    def test_quick_mode_serves_curl(self):
        backend = self.start_backend("http")
        proxy = self.start_proxy(self.quick_args(backend))
        r = curl(["-w", "\n%{http_code} %{http_version}"] +
                 curl_args("localhost", proxy.port, "/", self.ca.cert))
        self.assertEqual(r.returncode, 0, "curl: %s\n%s" % (r.stderr, proxy.diag()))
        self.assertEqual(r.stdout, b"ztproxy e2e backend\n\n200 1.1")
        [e] = proxy.wait_access()
        self.assertEqual(e["sni"], "localhost", e)
        self.assertEqual(e["close"], "client_close", e)
        self.assertEqual(e["backend"], backend.address, e)

    def test_quick_mode_with_all_options(self):
        backend = self.start_backend("http")
        proxy = self.start_proxy(self.quick_args(
            backend, self.rsa, "--workers", "1", "--handshake-timeout", "5s",
            "--idle-timeout", "60s", "--alpn", "http/1.1"))
        for i in range(5):  # sequential connections on a single worker
            r = curl(["-w", "%{http_version}"] +
                     curl_args("localhost", proxy.port, "/bytes/100000", self.ca.cert) +
                     ["-o", os.devnull])
            self.assertEqual((r.returncode, r.stdout), (0, b"1.1"),
                             "curl #%d: %s\n%s" % (i, r.stderr, proxy.diag()))
        entries = proxy.wait_access(count=5)
        self.assertEqual({e["alpn"] for e in entries}, {"http/1.1"}, entries)
        self.assertTrue(all(e["bytes_down"] > 100000 for e in entries), entries)

    def test_ktls_require_refuses_to_start_without_kernel_tls(self):
        if os.path.exists("/proc/net/tls_stat"):
            self.skipTest("this kernel has kTLS; the refusal is for kernels without it")
        r = subprocess.run([ztproxy_bin()] + self.quick_args(self.start_backend("http"), None, "--ktls", "require"),
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(b"requires kTLS, but this kernel has none", r.stderr)
        self.assertIn(b"TCP_ULP", r.stderr)

    def test_ktls_auto_falls_back_to_the_gated_userspace_path_and_says_why(self):
        if FORCED_RECORD_PATH:
            self.skipTest("this run forces record_path=%s" % FORCED_RECORD_PATH)
        if os.path.exists("/proc/net/tls_stat"):
            self.skipTest("this kernel has kTLS; the fallback is for kernels without it")
        backend = self.start_backend("http")
        proxy = self.start_proxy(self.quick_args(backend, None, "--ktls", "auto"))
        r = curl(curl_args("localhost", proxy.port, "/bytes/300000", self.ca.cert) + ["-o", os.devnull])
        self.assertEqual(r.returncode, 0, "curl: %s\n%s" % (r.stderr, proxy.diag()))
        [e] = proxy.wait_access()
        self.assertEqual((e["rx_path"], e["tx_path"]), ("userspace", "userspace"), e)
        self.assertEqual(e["ktls_fallback"], "no_kernel_support", e)
        self.assertEqual((e["spliced_up"], e["spliced_down"]), (0, 0), e)
        # Decrypted and encrypted in place: no plaintext byte was copied.
        self.assertEqual((e["copied_up"], e["copied_down"]), (0, 0), e)
        self.assertGreater(e["bytes_down"], 300000, e)

    def test_record_path_openssl_is_the_reference_path(self):
        if FORCED_RECORD_PATH:
            self.skipTest("this run forces record_path=%s" % FORCED_RECORD_PATH)
        backend = self.start_backend("http")
        proxy = self.start_proxy(self.quick_args(backend, None, "--record-path", "openssl"))
        r = curl(curl_args("localhost", proxy.port, "/", self.ca.cert))
        self.assertEqual(r.returncode, 0, "curl: %s\n%s" % (r.stderr, proxy.diag()))
        [e] = proxy.wait_access()
        self.assertEqual((e["rx_path"], e["tx_path"]), ("openssl", "openssl"), e)
        self.assertNotIn("ktls_fallback", e)
        self.assertEqual(e["copied_down"], e["bytes_down"], e)

    def test_process_is_hardened(self):
        # Keys live in memory: no core files, no gaining privileges through exec.
        proxy = self.start_proxy(self.quick_args(self.start_backend("http")))
        with open("/proc/%d/status" % proxy.pid) as f:
            self.assertIn("NoNewPrivs:\t1", f.read())
        with open("/proc/%d/limits" % proxy.pid) as f:
            core = [l for l in f if l.startswith("Max core file size")][0].split()
        self.assertEqual(core[4:6], ["0", "0"], core)

    def test_json_access_log(self):
        backend = self.start_backend("http")
        proxy = self.start_proxy(self.quick_args(backend) + ["--alpn", "http/1.1",
                                                            "--log-format", "json"])
        with tls_connect(proxy.port, "localhost", self.ca.cert, alpn=["http/1.1"]) as s:
            conn = HttpConn(s)
            conn.request("GET", "/", "localhost", headers={"User-Agent": 'e2e "json" test'})
            self.assertEqual(conn.response().status, 200)
            s.unwrap()
        proxy.wait_access()
        lines = [l for l in proxy.out.snapshot() if l.strip()]
        self.assertEqual(len(lines), 1, lines)
        e = json.loads(lines[0])  # the raw line is one JSON object, nothing around it
        self.assertLessEqual(ACCESS_KEYS, set(e), e)  # extra keys (e.g. a timestamp) are fine
        for k in ("bytes_up", "bytes_down", "duration_ms"):
            self.assertIsInstance(e[k], int, e)
        self.assertEqual((e["sni"], e["alpn"], e["version"], e["close"]),
                         ("localhost", "http/1.1", "TLSv1.3", "client_close"), e)
        self.assertGreater(e["bytes_up"], 0, e)

    def test_version(self):
        p = subprocess.run([ztproxy_bin(), "--version"], capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout.decode().strip(), r"^ztproxy \d+\.\d+\.\d+$")

    def test_bad_quick_mode_arguments_fail_fast(self):
        missing = os.path.join(self.tmp, "missing.pem")
        cases = {
            "no --key": ["run", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:1",
                         "--cert", self.leaf.cert],
            "bad listen address": ["run", "--listen", "not-an-address", "--backend",
                                   "127.0.0.1:1", "--cert", self.leaf.cert, "--key", self.leaf.key],
            "missing certificate file": ["run", "--listen", "127.0.0.1:0", "--backend",
                                         "127.0.0.1:1", "--cert", missing, "--key", self.leaf.key],
            "key does not match certificate": ["run", "--listen", "127.0.0.1:0", "--backend",
                                               "127.0.0.1:1", "--cert", self.leaf.cert,
                                               "--key", self.rsa.key],
        }
        for what, args in cases.items():
            with self.subTest(what):
                try:
                    p = subprocess.run([ztproxy_bin()] + args, capture_output=True, timeout=15)
                except subprocess.TimeoutExpired:
                    self.fail("%s: ztproxy kept running: %s" % (what, args))
                self.assertNotEqual(p.returncode, 0, "%s: exit 0" % what)
                self.assertTrue(p.stderr.strip(), "%s: no message on stderr" % what)
                self.assertNotRegex(p.stderr.decode(), re.compile(r"listening on"))


if __name__ == "__main__":
    unittest.main()
