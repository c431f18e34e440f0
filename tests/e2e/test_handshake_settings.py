"""Handshake settings chosen for their cost (README "Performance"), seen from a client:

- the certificate chain is exactly the certificate file: a chain file (leaf + intermediate) is sent
  whole, and a leaf-only file is sent alone even when the listener's client CA bundle holds its
  issuer (ztproxy sets SSL_MODE_NO_AUTO_CHAIN: no chain is built per handshake);
- a client receives exactly `tls13_tickets` TLS 1.3 session tickets per full handshake (default
  1; 0 and more are allowed), from the policy file and from quick mode's --tls13-tickets;
- a listener whose record path is always OpenSSL reads ahead from the first byte, so a request that
  arrives in the same segment as the client's Finished lies in OpenSSL's buffer when the handshake
  completes, and no more bytes will wake the socket: the relay still answers it (and so do the
  other record paths, where the request waits in the socket for the hand-over); and the same when
  the client sends its whole handshake and the request a byte at a time.

Clients are `openssl s_client` (-showcerts for the chain, -msg for the NewSessionTicket messages).
"""

import os
import re
import ssl
import subprocess
import unittest

from harness import (BioTlsClient, CertAuthority, LocalhostTestCase, client_context, policy_toml, require_tool,
                     run_checked, s_client)

NEW_SESSION_TICKET = re.compile(r"^<<< TLS 1\.3, Handshake \[length [0-9a-f]+\], NewSessionTicket", re.M)
CERT_LINE = re.compile(r"^ *(\d+) s:", re.M)


class HandshakeSettingsTest(LocalhostTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # root (cls.ca) -> intermediate -> leaf, and a chain file holding leaf + intermediate.
        d = os.path.join(cls.class_tmp, "intermediate")
        os.makedirs(d)
        mid = CertAuthority.__new__(CertAuthority)
        mid.dir, mid.cert, mid.key = d, os.path.join(d, "mid.pem"), os.path.join(d, "mid.key")
        cnf = mid._write("mid.cnf", "\n".join([
            "[req]", "distinguished_name = dn", "prompt = no", "[dn]", "O = ztproxy tests",
            "CN = ztproxy e2e intermediate", "[v3_mid]", "basicConstraints = critical,CA:TRUE,pathlen:0",
            "keyUsage = critical,keyCertSign,cRLSign", "subjectKeyIdentifier = hash",
            "authorityKeyIdentifier = keyid", ""]))
        run_checked(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-out", mid.key])
        csr = os.path.join(d, "mid.csr")
        run_checked(["openssl", "req", "-new", "-config", cnf, "-key", mid.key, "-out", csr])
        run_checked(["openssl", "x509", "-req", "-in", csr, "-CA", cls.ca.cert, "-CAkey", cls.ca.key,
                     "-set_serial", "7", "-days", "2", "-sha256", "-extfile", cnf, "-extensions", "v3_mid",
                     "-out", mid.cert])
        cls.chained = mid.issue("chained", "ec", dns=["localhost"])
        cls.chain_file = os.path.join(d, "chained-fullchain.pem")
        with open(cls.chain_file, "w") as out:
            for part in (cls.chained.cert, mid.cert):
                with open(part) as f:
                    out.write(f.read())

    def setUp(self):
        super().setUp()
        self.backend = self.start_backend("http")

    def quick(self, cert, key, *extra):
        return self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", self.backend.address,
                                 "--cert", cert, "--key", key, *extra])

    def sent_chain(self, port):
        """(the certificates the server sent, s_client's verify outcome) for a client trusting cls.ca."""
        require_tool("openssl")
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "localhost",
                            "-CAfile", self.ca.cert, "-showcerts"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        verify = re.search(r"Verify return code: (\d+)", r.stdout)
        return [int(i) for i in CERT_LINE.findall(r.stdout)], r.stdout.count("-----BEGIN CERTIFICATE-----"), \
            verify.group(1) if verify else r.stdout + r.stderr

    def test_a_chain_file_is_sent_whole(self):
        proxy = self.quick(self.chain_file, self.chained.key)
        indices, pems, verify = self.sent_chain(proxy.port)
        self.assertEqual((indices, pems), ([0, 1], 2), "leaf + intermediate expected")
        self.assertEqual(verify, "0", "the chain must verify against the root alone")

    def test_a_leaf_only_file_is_sent_alone(self):
        # The client CA bundle (loaded into the context's store for mTLS) holds the leaf's issuer:
        # OpenSSL's automatic chain building would find it there and send it too.
        proxy = self.quick(self.leaf.cert, self.leaf.key, "--client-ca", self.ca.cert, "--client-auth", "optional")
        indices, pems, verify = self.sent_chain(proxy.port)
        self.assertEqual((indices, pems), ([0], 1), "only the certificate file's content may be sent")
        self.assertEqual(verify, "0")

    def tickets_received(self, port):
        msgs = os.path.join(self.tmp, "msgs-%d.txt" % port)
        r = s_client(port, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n", 12, servername="localhost",
                     cafile=self.ca.cert, extra=["-tls1_3", "-msg", "-msgfile", msgs])
        self.assertIn(b"HTTP/1.", r.stdout, r.describe())
        with open(msgs) as f:
            return len(NEW_SESSION_TICKET.findall(f.read()))

    def test_quick_mode_ticket_count(self):
        for extra, want in (((), 1), (("--tls13-tickets", "3"), 3), (("--tls13-tickets", "0"), 0)):
            with self.subTest(flags=extra):
                proxy = self.quick(self.leaf.cert, self.leaf.key, *extra)
                self.assertEqual(self.tickets_received(proxy.port), want)
                proxy.stop()

    def test_a_request_in_the_segment_of_the_clients_finished_is_answered(self):
        self.ping_behind_the_finished()

    def test_a_handshake_and_request_sent_a_byte_at_a_time_are_answered(self):
        self.ping_behind_the_finished(dribble=True)

    def ping_behind_the_finished(self, dribble=False):
        """TLS 1.3: the client's Finished and a 4-byte request leave together (one send(), or one
        byte per send() with dribble); TLS 1.2: the request follows the server's Finished (the
        client's flight goes first). On each host record path, the echo must come back."""
        echo = self.start_backend("echo")
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            ctx = client_context(self.ca.cert, minimum=version, maximum=version)
            for path in ("openssl", "userspace"):
                with self.subTest(record_path=path, version=version.name):
                    proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", echo.address, "--cert",
                                              self.leaf.cert, "--key", self.leaf.key, "--record-path", path])
                    client = BioTlsClient(proxy.port, "localhost", ctx, timeout=10.0, hold_final_flight=True,
                                          dribble=dribble)
                    try:
                        client.write(b"ping")
                        self.assertEqual(client.read_exactly(4), b"ping", proxy.diag())
                    finally:
                        client.close()
                    proxy.stop()

    def test_policy_ticket_count(self):
        text = policy_toml(
            listeners=[{"name": "one", "certs": [("main", self.leaf, None)], "tls": {}},
                       {"name": "two", "certs": [("main", self.leaf, None)], "tls": {"tls13_tickets": 2}}],
            backends=[{"name": "app", "addresses": [self.backend.address]}],
            routes=[{"default": True, "backend": "app"}])
        proxy = self.start_policy_proxy(text, listeners=2)
        self.assertEqual(self.tickets_received(proxy.port_of("one")), 1)
        self.assertEqual(self.tickets_received(proxy.port_of("two")), 2)


if __name__ == "__main__":
    unittest.main()
