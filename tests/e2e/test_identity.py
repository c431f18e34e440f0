"""Identity end to end: client certificates (mTLS: client_auth none / optional / require) and the
PROXY protocol v2 header towards backends (proxy_protocol = "v2").

mTLS: curl and Python's ssl with client certificates from a client CA made here; a certificate
from another CA and a missing certificate are refused during the handshake, with the reason in
the access log and the operational log, and counted in /metrics. PROXY v2: the test backend
(backend.py --proxy-protocol v2) decodes the header of every connection and reports it; every
field is compared with what the client socket, the proxy and the TLS session say. With
proxy_protocol off the backend gets exactly the client's bytes.

CTest runs this suite once per record path (ZTP_E2E_RECORD_PATH): the client certificate is
verified during the handshake and the header is sent before the relay starts, so both must work
on every path and relay (buffered, userspace, rewrite).
"""

import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import unittest

from harness import (EVENT_TIMEOUT, E2ETestCase, CertAuthority, HttpConn, client_context, curl, curl_args,
                     half_close_exchange, policy_toml, ztproxy_bin)
from test_admin import metric, scrape

SUBJECT = "CN=alice,O=ztproxy tests"  # RFC 2253: most specific RDN first
PROXY_HEADER_RE = r"^PROXY_HEADER peer=(\S+) json=(.*)$"


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class IdentityTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tmp = cls.class_tmp
        cls.ca = CertAuthority(os.path.join(tmp, "server-pki"))
        cls.server = cls.ca.issue("localhost", "ec", dns=["localhost"])
        cls.client_ca = CertAuthority(os.path.join(tmp, "client-pki"), name="ztproxy e2e client CA")
        cls.alice = cls.client_ca.issue("alice", "ec", dns=(), ips=(), cn="alice", eku="clientAuth")
        cls.rogue_ca = CertAuthority(os.path.join(tmp, "rogue-pki"), name="ztproxy e2e rogue CA")
        cls.mallory = cls.rogue_ca.issue("mallory", "ec", dns=(), ips=(), cn="alice", eku="clientAuth")

    # ------------------------------------------------------------------------------- helpers

    def policy(self, backend, client_auth=None, proxy_protocol=None, address="127.0.0.1:0"):
        tls = {}
        if client_auth:
            tls = {"client_auth": client_auth, "client_ca": self.client_ca.cert}
        return policy_toml(
            listeners=[{"name": "main", "address": address, "tls": tls,
                        "certs": [("main", self.server, ["localhost"])]}],
            backends=[{"name": "app", "addresses": [backend.address], "proxy_protocol": proxy_protocol}],
            routes=[{"default": True, "backend": "app"}])

    def start(self, text):
        proxy = self.start_proxy(["run", "-c", self.write_policy(text), "--admin", "127.0.0.1:0"])
        admin = proxy.admin_address()
        return proxy, admin

    def curl_get(self, port, path="/", cert=None, extra=()):
        args = list(extra) + curl_args("localhost", port, path, self.ca.cert)
        if cert:
            args = ["--cert", cert.cert, "--key", cert.key] + args
        return curl(args)

    def client_ctx(self, cert=None, alpn=("http/1.1",)):
        ctx = client_context(self.ca.cert, alpn=list(alpn) if alpn else None)
        if cert:
            ctx.load_cert_chain(cert.cert, cert.key)
        return ctx

    def get(self, port, cert=None, alpn=("http/1.1",), path="/", session=None, ctx=None):
        """One GET over Python's ssl; returns (response, client address, TLS facts, session).
        A session to resume needs the context it came from (ctx)."""
        ctx = ctx or self.client_ctx(cert, alpn)
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            conn = HttpConn(s)
            conn.request("GET", path, "localhost")
            r = conn.response()
            facts = {"version": s.version(), "cipher": s.cipher()[0], "alpn": s.selected_alpn_protocol(),
                     "reused": s.session_reused}
            return r, s.getsockname(), facts, s.session

    def header_for(self, backend, client_addr):
        """The PROXY header the backend decoded for the connection from the proxy whose header
        names client_addr as its source."""
        want = "%s:%d" % client_addr[:2]

        def match(line):
            m = re.match(PROXY_HEADER_RE, line)
            if not m:
                return None
            h = json.loads(m.group(2))
            return h if "%s:%d" % (h["src"], h["src_port"]) == want else None

        found = backend.out.wait_for(match, EVENT_TIMEOUT)
        if found is None:
            raise AssertionError("no PROXY header from %s\n%s" % (want, backend.diag()))
        return found[1]

    def rejected(self, proxy, detail):
        [e] = proxy.wait_access(lambda e: e.get("close") == "client_cert_rejected",
                                what="for the refused client certificate")
        self.assertEqual(e.get("client_cert_error"), detail, e)
        self.assertFalse(e.get("client_subject"), e)
        self.assertEqual(e.get("bytes_up"), 0, e)
        proxy.wait_line("stderr", re.escape("client certificate refused") + r" \(\w+\): " + re.escape(detail))
        return e

    # ---------------------------------------------------------------------------- mTLS: require

    def test_require_accepts_a_certificate_from_the_client_ca(self):
        backend = self.start_backend("http")
        proxy, admin = self.start(self.policy(backend, "require"))
        r = self.curl_get(proxy.port, cert=self.alice)
        self.assertEqual(r.returncode, 0, "curl failed: %s\n%s" % (r.stderr, proxy.diag()))
        self.assertEqual(r.stdout, b"ztproxy e2e backend\n")
        [e] = proxy.wait_access(lambda e: e.get("close") != "client_cert_rejected")
        self.assertEqual(e["client_subject"], SUBJECT, e)
        self.assertFalse(e.get("client_cert_error"), e)
        _, text = scrape(admin)
        self.assertEqual(metric(text, "ztproxy_client_certs_verified_total"), 1)
        self.assertEqual(metric(text, "ztproxy_client_cert_failures_total", reason="untrusted"), 0)

    def test_require_refuses_a_certificate_from_another_ca(self):
        backend = self.start_backend("record")
        proxy, admin = self.start(self.policy(backend, "require"))
        r = self.curl_get(proxy.port, cert=self.mallory)  # same subject, wrong issuer
        self.assertNotEqual(r.returncode, 0, "curl got through with a rogue certificate")
        self.rejected(proxy, "unable to get local issuer certificate")
        _, text = scrape(admin)
        self.assertEqual(metric(text, "ztproxy_client_cert_failures_total", reason="untrusted"), 1)
        self.assertEqual(metric(text, "ztproxy_handshakes_total", result="failed"), 1)
        self.assertEqual(metric(text, "ztproxy_handshakes_total", result="ok"), 0)
        self.assertEqual(metric(text, "ztproxy_client_certs_verified_total"), 0)
        self.assertEqual(backend.events("RECORD_CLOSED"), [], "the backend must never be reached")

    def test_require_refuses_a_client_without_certificate(self):
        backend = self.start_backend("http")
        proxy, admin = self.start(self.policy(backend, "require"))
        r = self.curl_get(proxy.port)
        self.assertNotEqual(r.returncode, 0, "curl got through without a client certificate")
        self.rejected(proxy, "no client certificate presented")
        _, text = scrape(admin)
        self.assertEqual(metric(text, "ztproxy_client_cert_failures_total", reason="missing"), 1)

    def test_server_certificate_is_not_a_client_certificate(self):
        # Signed by a trusted CA, but for serverAuth only: client verification checks the purpose.
        leaf = self.client_ca.issue("server-only", "ec", dns=(), ips=(), cn="server-only")
        backend = self.start_backend("http")
        proxy, admin = self.start(self.policy(backend, "require"))
        self.assertNotEqual(self.curl_get(proxy.port, cert=leaf).returncode, 0)
        self.rejected(proxy, "unsuitable certificate purpose")
        _, text = scrape(admin)
        self.assertEqual(metric(text, "ztproxy_client_cert_failures_total", reason="invalid"), 1)

    def test_every_sni_certificate_verifies_clients(self):
        # SNI switches the connection to another certificate's context before the client
        # certificate is verified: that context must hold the client CA too.
        other = self.ca.issue("other", "ec", dns=["other.test"])
        backend = self.start_backend("http")
        proxy, _ = self.start(policy_toml(
            listeners=[{"name": "main", "tls": {"client_auth": "require", "client_ca": self.client_ca.cert},
                        "certs": [("main", self.server, ["localhost"]), ("other", other, ["other.test"])]}],
            backends=[{"name": "app", "addresses": [backend.address]}],
            routes=[{"default": True, "backend": "app"}]))
        args = ["--cacert", self.ca.cert] + curl_args("other.test", proxy.port)
        r = curl(["--cert", self.alice.cert, "--key", self.alice.key] + args)
        self.assertEqual(r.returncode, 0, "curl failed: %s\n%s" % (r.stderr, proxy.diag()))
        proxy.wait_access(lambda e: e.get("sni") == "other.test" and e.get("client_subject") == SUBJECT)
        self.assertNotEqual(curl(["--cert", self.mallory.cert, "--key", self.mallory.key] + args).returncode, 0)
        self.rejected(proxy, "unable to get local issuer certificate")

    # --------------------------------------------------------------------------- mTLS: optional

    def test_optional_accepts_with_and_without_certificate_but_never_a_bad_one(self):
        backend = self.start_backend("http")
        proxy, _ = self.start(self.policy(backend, "optional"))
        r = self.curl_get(proxy.port)
        self.assertEqual(r.returncode, 0, r.stderr)
        [e] = proxy.wait_access(what="for the connection without a certificate")
        self.assertFalse(e.get("client_subject"), e)
        r = self.curl_get(proxy.port, cert=self.alice)
        self.assertEqual(r.returncode, 0, r.stderr)
        proxy.wait_access(lambda e: e.get("client_subject") == SUBJECT, what="with alice's subject")
        # optional is about presence, not trust: a presented certificate must verify.
        self.assertNotEqual(self.curl_get(proxy.port, cert=self.mallory).returncode, 0)
        self.rejected(proxy, "unable to get local issuer certificate")

    def test_none_never_asks_for_a_certificate(self):
        backend = self.start_backend("http")
        proxy, _ = self.start(self.policy(backend))
        r = self.curl_get(proxy.port, cert=self.alice)
        self.assertEqual(r.returncode, 0, r.stderr)
        [e] = proxy.wait_access()
        self.assertFalse(e.get("client_subject"), "a certificate was requested without client_auth: %r" % e)

    # ------------------------------------------------------------------------------- PROXY v2

    def check_header(self, h, client_addr, port, facts, cert):
        self.assertEqual(h["family"], "TCP6" if ":" in client_addr[0] else "TCP4", h)
        self.assertEqual((h["src"], h["src_port"]), tuple(client_addr[:2]), h)
        self.assertEqual((h["dst"], h["dst_port"]), (client_addr[0], port), "destination = the listener")
        self.assertEqual(h["authority"], "localhost", h)
        if facts["alpn"]:
            self.assertEqual(h["alpn"], facts["alpn"], h)
        else:
            self.assertNotIn("alpn", h)
        ssl_info = h["ssl"]
        self.assertEqual(ssl_info["version"], facts["version"], h)
        self.assertEqual(ssl_info["cipher"], facts["cipher"], h)
        if cert:
            flags = 0x01 | 0x04 | (0 if facts["reused"] else 0x02)
            self.assertEqual(ssl_info["client"], flags, h)
            self.assertEqual(ssl_info["verify"], 0, h)
            self.assertEqual(ssl_info["cn"], "alice", h)
            self.assertEqual(h["subject"], SUBJECT, h)
        else:
            self.assertEqual(ssl_info["client"], 0x01, h)
            self.assertNotEqual(ssl_info["verify"], 0, "no certificate was verified: %r" % h)
            self.assertNotIn("cn", ssl_info)
            self.assertNotIn("subject", h)

    def test_proxy_v2_header_carries_every_tlv_under_mtls(self):
        backend = self.start_backend("http", proxy_protocol="v2")
        proxy, _ = self.start(self.policy(backend, "require", proxy_protocol="v2"))
        r, client_addr, facts, _ = self.get(proxy.port, cert=self.alice)
        self.assertEqual((r.status, r.body), (200, b"ztproxy e2e backend\n"))
        self.assertEqual(facts["alpn"], "http/1.1")
        self.check_header(self.header_for(backend, client_addr), client_addr, proxy.port, facts, self.alice)
        self.assertEqual(backend.events("PROXY_ERROR"), [])

    def test_quick_mode_client_ca_and_proxy_protocol(self):
        # A one-line sidecar: --client-ca (require by default) and --proxy-protocol v2.
        backend = self.start_backend("http", proxy_protocol="v2")
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", backend.address,
                                  "--cert", self.server.cert, "--key", self.server.key, "--alpn", "http/1.1",
                                  "--client-ca", self.client_ca.cert, "--proxy-protocol", "v2"])
        r, client_addr, facts, _ = self.get(proxy.port, cert=self.alice)
        self.assertEqual((r.status, r.body), (200, b"ztproxy e2e backend\n"))
        self.check_header(self.header_for(backend, client_addr), client_addr, proxy.port, facts, self.alice)
        r = self.curl_get(proxy.port)
        self.assertNotEqual(r.returncode, 0, "a client without a certificate got through")
        self.rejected(proxy, "no client certificate presented")

    def test_proxy_v2_header_for_a_resumed_mtls_session(self):
        backend = self.start_backend("http", proxy_protocol="v2")
        proxy, _ = self.start(self.policy(backend, "require", proxy_protocol="v2"))
        ctx = self.client_ctx(self.alice)
        _, _, first, session = self.get(proxy.port, ctx=ctx)
        self.assertFalse(first["reused"])
        r, client_addr, facts, _ = self.get(proxy.port, ctx=ctx, session=session)
        self.assertEqual(r.status, 200)
        self.assertTrue(facts["reused"], "the session was not resumed (session id context?)")
        h = self.header_for(backend, client_addr)
        self.check_header(h, client_addr, proxy.port, facts, self.alice)
        self.assertEqual(h["ssl"]["client"], 0x05, "certificate from the session, not this connection")
        entries = proxy.wait_access(count=2)
        self.assertEqual([e.get("client_subject") for e in entries], [SUBJECT, SUBJECT])

    def test_proxy_v2_header_with_curl_http11_alpn(self):
        backend = self.start_backend("http", proxy_protocol="v2")
        proxy, _ = self.start(self.policy(backend, "optional", proxy_protocol="v2"))
        r = self.curl_get(proxy.port, cert=self.alice, extra=["--http1.1"])
        self.assertEqual(r.returncode, 0, "curl failed: %s\n%s" % (r.stderr, proxy.diag()))
        [e] = proxy.wait_access()
        m = backend.wait_event(PROXY_HEADER_RE)
        h = json.loads(m.group(2))
        self.assertEqual("%s:%d" % (h["src"], h["src_port"]), e["client"], "source = the client in the access log")
        self.assertEqual(h["dst_port"], proxy.port)
        self.assertEqual(h["alpn"], "http/1.1")
        self.assertEqual(h["authority"], "localhost")
        self.assertEqual(h["ssl"]["version"], e["version"])
        self.assertEqual(h["ssl"]["cipher"], e["cipher"])
        self.assertEqual(h["ssl"]["cn"], "alice")
        self.assertEqual(h["subject"], e["client_subject"])

    def test_proxy_v2_header_without_client_certificate_or_alpn(self):
        backend = self.start_backend("http", proxy_protocol="v2")
        proxy, _ = self.start(self.policy(backend, proxy_protocol="v2"))
        r, client_addr, facts, _ = self.get(proxy.port, alpn=None)
        self.assertEqual(r.status, 200)
        self.assertIsNone(facts["alpn"])
        h = self.header_for(backend, client_addr)
        self.check_header(h, client_addr, proxy.port, facts, None)
        self.assertEqual(sorted(h["tlv_types"]), [0x02, 0x20], "AUTHORITY and SSL only")

    @unittest.skipUnless(ipv6_loopback(), "no IPv6 loopback")
    def test_proxy_v2_header_for_an_ipv6_client(self):
        backend = self.start_backend("http", proxy_protocol="v2")
        proxy, _ = self.start(self.policy(backend, "require", proxy_protocol="v2", address="[::1]:0"))
        ctx = self.client_ctx(self.alice)
        with ctx.wrap_socket(socket.create_connection(("::1", proxy.port), timeout=15),
                             server_hostname="localhost") as s:
            conn = HttpConn(s)
            conn.request("GET", "/", "localhost")
            self.assertEqual(conn.response().status, 200)
            client_addr = s.getsockname()
            facts = {"version": s.version(), "cipher": s.cipher()[0], "alpn": s.selected_alpn_protocol(),
                     "reused": False}
        h = self.header_for(backend, client_addr)
        self.assertEqual(h["family"], "TCP6")
        self.check_header(h, client_addr, proxy.port, facts, self.alice)

    def test_proxy_v2_header_on_a_route_with_redaction_rules(self):
        # Rules move the connection onto the rewrite relay: the header must come first there too.
        backend = self.start_backend("http", proxy_protocol="v2")
        text = self.policy(backend, "require", proxy_protocol="v2").rstrip("\n") + \
            '\nrules = ["card"]\n\n[[rule]]\nid = "card"\ndirection = "response"\nliteral = "4111 1111"\n'
        proxy, _ = self.start(text)
        r, client_addr, facts, _ = self.get(proxy.port, cert=self.alice, path="/secret")
        self.assertEqual(r.status, 200)
        self.assertIn(b"account=********* 1111 1111;", r.body)
        self.check_header(self.header_for(backend, client_addr), client_addr, proxy.port, facts, self.alice)

    def test_proxy_protocol_off_prepends_nothing(self):
        backend = self.start_backend("record")
        proxy, _ = self.start(self.policy(backend, "require"))
        payload = b"exactly these bytes, nothing before them\n" * 100
        got, how = half_close_exchange(proxy.port, "localhost", self.client_ctx(self.alice), payload)
        self.assertEqual(got.decode().split(), ["RECORDED", str(len(payload)), hashlib.sha256(payload).hexdigest()],
                         how)

    def test_without_the_option_a_proxy_aware_backend_sees_no_header(self):
        # The other side of the previous test, through the backend's parser: it refuses the
        # plain request, so the parser the header tests rely on does tell a header from none.
        backend = self.start_backend("http", proxy_protocol="v2")
        proxy, _ = self.start(self.policy(backend))
        self.curl_get(proxy.port)
        backend.wait_event(r"^PROXY_ERROR peer=\S+ reason=no_PROXY_v2_signature$")

    # ------------------------------------------------------------------------ configuration

    def test_check_reports_an_unusable_client_ca_at_its_value(self):
        empty = os.path.join(self.tmp, "empty-ca.pem")
        open(empty, "w").close()
        cases = ((os.path.join(self.tmp, "missing-ca.pem"), "cannot read client_ca"),
                 (empty, "cannot load client_ca"))
        for ca, why in cases:
            with self.subTest(why=why):
                text = policy_toml(
                    listeners=[{"name": "main", "tls": {"client_auth": "require", "client_ca": ca},
                                "certs": [("main", self.server, ["localhost"])]}],
                    backends=[{"name": "app", "addresses": ["127.0.0.1:9"]}],
                    routes=[{"default": True, "backend": "app"}])
                [(line, col)] = [(n + 1, l.index("= ") + 3) for n, l in enumerate(text.splitlines())
                                 if l.strip().startswith("client_ca =")]
                path = self.write_policy(text)
                p = subprocess.run([ztproxy_bin(), "check", "-c", path], capture_output=True, text=True,
                                   timeout=60)
                self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
                self.assertIn("%s:%d:%d: %s '%s'" % (path, line, col, why, ca), p.stdout)


if __name__ == "__main__":
    unittest.main()
