"""ztproxy end to end, the basics: curl through the proxy, the access log, `openssl s_client`
over every TLS version x certificate type x cipher we support, and certificate selection by SNI.

Every test starts the real binary (ZTPROXY_BIN) and a real backend process (backend.py), port 0.
"""

import json
import os
import ssl
import unittest

from harness import (E2ETestCase, CertAuthority, HttpConn, client_context, curl, curl_args,
                     half_close_exchange, policy_toml, s_client, tls_connect)

RECORD_PATHS = {"openssl", "kernel", "userspace"}

# TLS 1.2 suites by certificate type: OpenSSL name -> IANA name (the log may use either).
TLS12_CIPHERS = {
    "ec": {
        "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    },
    "rsa": {
        "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    },
}
TLS13_SUITES = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]


def san_dns(cert):
    return sorted(v for k, v in cert.get("subjectAltName", ()) if k == "DNS")


class ProxyBasicTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ca = CertAuthority(os.path.join(cls.class_tmp, "pki"))
        cls.ec = cls.ca.issue("ec", "ec", dns=["ec.test", "localhost"])
        cls.rsa = cls.ca.issue("rsa", "rsa", dns=["rsa.test", "localhost"])
        cls.a = cls.ca.issue("a", "ec", dns=["a.test"])
        cls.b = cls.ca.issue("b", "ec", dns=["b.test"])

    def sni_policy(self, backend, alpn=("http/1.1",)):
        return policy_toml(
            listeners=[{"name": "main",
                        "tls": {"alpn": list(alpn)},
                        "certs": [("a", self.a, ["a.test"]), ("b", self.b, ["b.test"])]}],
            backends=[{"name": "app", "addresses": [backend.address]}],
            routes=[{"default": True, "backend": "app"}])

    def check_common_fields(self, e, backend, listener="main"):
        self.assertEqual(e["listener"], listener, e)
        self.assertTrue(e["client"].startswith("127.0.0.1:"), e)
        self.assertIn(e["backend"], ("app", backend.address), e)
        self.assertIn(e["rx_path"], RECORD_PATHS, e)
        self.assertIn(e["tx_path"], RECORD_PATHS, e)
        self.assertIsInstance(e["duration_ms"], int, e)
        self.assertGreaterEqual(e["duration_ms"], 0, e)

    # ---------------------------------------------------------------- 1. curl + access log

    def test_curl_get_through_proxy(self):
        backend = self.start_backend("http")
        proxy = self.start_policy_proxy(self.sni_policy(backend))
        r = curl(["--cacert", self.ca.cert, "-D", "-"] + curl_args("a.test", proxy.port, "/"))
        self.assertEqual(r.returncode, 0, "curl failed: %s\n%s" % (r.stderr, proxy.diag()))
        head, _, body = r.stdout.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        self.assertEqual(body, b"ztproxy e2e backend\n")

        [e] = proxy.wait_access(lambda e: e.get("sni") == "a.test", what="for curl's connection")
        self.check_common_fields(e, backend)
        self.assertEqual(e["version"], "TLSv1.3", e)
        self.assertEqual(e["alpn"], "http/1.1", e)
        self.assertIn(e["cipher"], TLS13_SUITES, e)
        self.assertGreater(e["bytes_up"], len(b"GET / HTTP/1.1\r\n\r\n"), e)
        self.assertGreaterEqual(e["bytes_down"], len(r.stdout), e)  # curl saw head + body
        self.assertEqual(e["close"], "client_close", e)

    def test_access_log_counts_exact_plaintext_bytes(self):
        backend = self.start_backend("http")
        proxy = self.start_policy_proxy(self.sni_policy(backend))
        request = b"GET /echo-headers HTTP/1.1\r\nHost: b.test\r\nX-Test: exact-bytes\r\n\r\n"
        with tls_connect(proxy.port, "b.test", self.ca.cert, alpn=["h2", "http/1.1"]) as s:
            self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
            s.sendall(request)
            conn = HttpConn(s)
            status, _, headers = conn.read_head()
            self.assertEqual(status, 200)
            length = int(headers["content-length"])
            body = json.loads(b"".join(conn.read_body_chunks(length)))
            self.assertIn(["X-Test", "exact-bytes"], body["headers"])
            client_addr = "%s:%d" % s.getsockname()[:2]
            s.unwrap()  # our close_notify first: the proxy should log client_close
        [e] = proxy.wait_access(lambda e: e.get("sni") == "b.test", what="for the client")
        self.check_common_fields(e, backend)
        self.assertEqual(e["client"], client_addr, e)
        self.assertEqual(e["alpn"], "http/1.1", e)
        self.assertEqual(e["bytes_up"], len(request), e)
        self.assertEqual(e["bytes_down"], conn.head_len + length, e)
        self.assertEqual(e["close"], "client_close", e)

    # ---------------------------------------------------------------- 2. s_client matrix

    def test_s_client_versions_cert_types_and_ciphers(self):
        # One listener, an ECDSA and an RSA certificate chosen by SNI: the cipher suites offered
        # for TLS 1.2 depend on the certificate picked for the name.
        backend = self.start_backend("echo")
        proxy = self.start_policy_proxy(policy_toml(
            listeners=[{"name": "main", "certs": [("ec", self.ec, ["ec.test"]),
                                                  ("rsa", self.rsa, ["rsa.test"])]}],
            backends=[{"name": "echo", "addresses": [backend.address]}],
            routes=[{"default": True, "backend": "echo"}]))
        combos = []
        for kind in ("ec", "rsa"):
            for name, iana in TLS12_CIPHERS[kind].items():
                combos.append((kind, "TLSv1.2", ["-tls1_2", "-cipher", name], {name, iana}))
            for suite in TLS13_SUITES:
                combos.append((kind, "TLSv1.3", ["-tls1_3", "-ciphersuites", suite], {suite}))
        for kind, version, flags, cipher_names in combos:
            with self.subTest(cert=kind, flags=" ".join(flags)):
                port = proxy.port
                payload = ("hello %s %s\n" % (kind, " ".join(flags))).encode() * 3
                r = s_client(port, payload, len(payload), servername="%s.test" % kind,
                             cafile=self.ca.cert, extra=flags)
                self.assertEqual(r.stdout, payload, r.describe() + "\n" + proxy.diag())
                self.assertEqual(r.protocol, version, r.describe())
                self.assertIn(r.cipher, cipher_names, r.describe())
                self.assertFalse(r.timed_out, r.describe())
                [e] = proxy.wait_access(
                    lambda e: e.get("sni") == "%s.test" % kind and e.get("cipher") in cipher_names,
                    what="for s_client %s %s" % (kind, flags))
                self.check_common_fields(e, backend)
                self.assertEqual(e["version"], version, e)
                self.assertEqual(e["sni"], "%s.test" % kind, e)
                self.assertEqual(e["bytes_up"], len(payload), e)
                self.assertEqual(e["bytes_down"], len(payload), e)
                self.assertEqual(e["close"], "client_close", e)

    def test_client_half_close_still_gets_the_reply(self):
        # TLS 1.3 and 1.2 allow a half-close: the client sends its data and close_notify, then
        # reads. The proxy must pass the end of input on (FIN to the backend) and still deliver
        # everything the backend sends back, then close_notify.
        backend = self.start_backend("echo")
        proxy = self.start_policy_proxy(policy_toml(
            listeners=[{"name": "main", "certs": [("ec", self.ec, None)]}],
            backends=[{"name": "echo", "addresses": [backend.address]}],
            routes=[{"default": True, "backend": "echo"}]))
        size = 1 << 20
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            with self.subTest(version=version.name):
                payload = os.urandom(size)
                got, how = half_close_exchange(proxy.port, "ec.test",
                                               client_context(self.ca.cert, maximum=version), payload)
                self.assertEqual((len(got), got == payload, how), (size, True, "close_notify"),
                                 proxy.diag())
        entries = proxy.wait_access(count=2)
        for e in entries:
            self.assertEqual((e["bytes_up"], e["bytes_down"], e["close"]),
                             (size, size, "client_close"), e)

    def test_tls_version_limits_from_policy(self):
        backend = self.start_backend("echo")
        proxies = {}
        for name, tls in (("only13", {"min_version": "1.3"}), ("only12", {"max_version": "1.2"})):
            proxies[name] = self.start_policy_proxy(policy_toml(
                listeners=[{"name": name, "tls": tls, "certs": [("ec", self.ec, None)]}],
                backends=[{"name": "echo", "addresses": [backend.address]}],
                routes=[{"default": True, "backend": "echo"}]), label="ztproxy-" + name)
        r = s_client(proxies["only13"].port, b"x\n", 2, "ec.test", self.ca.cert, ["-tls1_2"])
        self.assertNotEqual(r.stdout, b"x\n", r.describe())
        self.assertIsNone(r.protocol, r.describe())
        r = s_client(proxies["only12"].port, b"y\n", 2, "ec.test", self.ca.cert, ["-tls1_3"])
        self.assertNotEqual(r.stdout, b"y\n", r.describe())
        self.assertIsNone(r.protocol, r.describe())
        # ...and without a version flag each negotiates what it allows, and still serves.
        r = s_client(proxies["only13"].port, b"z\n", 2, "ec.test", self.ca.cert)
        self.assertEqual((r.stdout, r.protocol), (b"z\n", "TLSv1.3"), r.describe())
        r = s_client(proxies["only12"].port, b"w\n", 2, "ec.test", self.ca.cert)
        self.assertEqual((r.stdout, r.protocol), (b"w\n", "TLSv1.2"), r.describe())
        for p in proxies.values():
            p.wait_access(lambda e: e.get("close") == "handshake_failed",
                          what="close=handshake_failed for the refused version")

    def test_session_tickets_from_policy(self):
        # session_tickets = false: no ticket at all, in either version (TLS 1.2: none in the
        # handshake; TLS 1.3: no NewSessionTicket after it, read here with the response). With
        # true, or the key left out (the default), the same client gets one: the check can see it.
        backend = self.start_backend("http")
        for tickets in (None, True, False):
            proxy = self.start_policy_proxy(policy_toml(
                listeners=[{"name": "main", "tls": {"session_tickets": tickets},
                            "certs": [("ec", self.ec, None)]}],
                backends=[{"name": "app", "addresses": [backend.address]}],
                routes=[{"default": True, "backend": "app"}]),
                label="ztproxy-tickets-%s" % ("default" if tickets is None else tickets))
            for version, name in ((ssl.TLSVersion.TLSv1_3, "TLSv1.3"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2")):
                with self.subTest(session_tickets=tickets, version=name):
                    with tls_connect(proxy.port, "localhost", self.ca.cert, minimum=version,
                                     maximum=version) as s:
                        conn = HttpConn(s)
                        conn.request("GET", "/", "localhost")
                        self.assertEqual(conn.response().status, 200)
                        self.assertEqual(s.version(), name)
                        self.assertEqual(s.session.has_ticket, tickets is not False, proxy.diag())
            proxy.wait_access(count=2)

    def test_two_listeners_on_port_zero(self):
        # Port 0 means "any free port" for each listener: two of them are not the same address.
        backend = self.start_backend("echo")
        proxy = self.start_policy_proxy(policy_toml(
            listeners=[{"name": "one", "certs": [("ec", self.ec, None)]},
                       {"name": "two", "certs": [("rsa", self.rsa, None)]}],
            backends=[{"name": "echo", "addresses": [backend.address]}],
            routes=[{"default": True, "backend": "echo"}]), listeners=2)
        self.assertNotEqual(proxy.port_of("one"), proxy.port_of("two"))
        for name in ("one", "two"):
            r = s_client(proxy.port_of(name), b"hi\n", 3, "localhost", self.ca.cert)
            self.assertEqual(r.stdout, b"hi\n", r.describe())
        entries = proxy.wait_access(count=2)
        self.assertEqual(sorted(e["listener"] for e in entries), ["one", "two"])

    # ---------------------------------------------------------------- 3. SNI -> certificate

    def test_certificate_selected_by_sni(self):
        backend = self.start_backend("http")
        proxy = self.start_policy_proxy(self.sni_policy(backend))
        for name, other in (("a.test", "b.test"), ("b.test", "a.test")):
            with self.subTest(sni=name):
                # The handshake itself verifies chain and host name against the CA.
                with tls_connect(proxy.port, name, self.ca.cert) as s:
                    cert = s.getpeercert()
                    self.assertEqual(san_dns(cert), [name], cert)
                    self.assertIn(((("commonName", name),)), cert["subject"], cert)
                    conn = HttpConn(s)
                    conn.request("GET", "/", name)
                    resp = conn.response()
                    self.assertEqual((resp.status, resp.body), (200, b"ztproxy e2e backend\n"))
                # Asking for the other name is answered with the other certificate.
                with tls_connect(proxy.port, other, self.ca.cert) as s:
                    self.assertEqual(san_dns(s.getpeercert()), [other])
        entries = proxy.wait_access(lambda e: e.get("sni") in ("a.test", "b.test"), count=4)
        self.assertEqual(sorted(e["sni"] for e in entries), ["a.test"] * 2 + ["b.test"] * 2)

    def test_sni_is_case_insensitive(self):
        backend = self.start_backend("http")
        proxy = self.start_policy_proxy(self.sni_policy(backend))
        request = b"GET / HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n"
        # Read until the backend closes (Connection: close), so expect "more than ever comes".
        r = s_client(proxy.port, request, 1 << 20, "B.Test", self.ca.cert)
        self.assertIn("CN = b.test", r.stderr, r.describe())
        self.assertTrue(r.stdout.startswith(b"HTTP/1.1 200"), r.describe())
        self.assertTrue(r.stdout.endswith(b"ztproxy e2e backend\n"), r.describe())
        [e] = proxy.wait_access()
        self.assertEqual(e["sni"].lower(), "b.test", e)
        self.assertEqual(e["close"], "backend_close", e)

    def test_unknown_or_missing_sni_gets_default_certificate(self):
        backend = self.start_backend("http")
        proxy = self.start_policy_proxy(self.sni_policy(backend))
        for sni in (None, "c.test"):
            with self.subTest(sni=sni):
                with tls_connect(proxy.port, sni, self.ca.cert, check_hostname=False) as s:
                    self.assertEqual(san_dns(s.getpeercert()), ["a.test"])  # first = default
                    conn = HttpConn(s)
                    conn.request("GET", "/", "a.test")
                    self.assertEqual(conn.response().status, 200)
        proxy.wait_access(lambda e: e.get("sni") in ("", "c.test"), count=2)


if __name__ == "__main__":
    unittest.main()
