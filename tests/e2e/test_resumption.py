"""TLS session resumption: tickets survive SIGHUP (generated keys and a key file), instances
sharing a key file resume each other's sessions (and one without it does not), key rotation by
prepending and removing lines, and TLS 1.2 session-id resumption after an offloaded connection
ended cleanly (the session cache). `ztproxy check` on bad key files.

Runs once per record path (CMake: auto, userspace, openssl; tests/ktls/test_ktls_resumption.py
runs it on the kernel path inside the kTLS kernel). Clients are Python ssl sockets (one
SSLContext per client, as Python resumes only within one) and `openssl s_client -sess_out` to
read which key a ticket names.
"""

import base64
import os
import re
import signal
import socket
import ssl
import subprocess
import unittest

from harness import (CertAuthority, HttpConn, LocalhostTestCase, client_context, policy_toml, run_checked,
                     s_client, set_linger_reset, ztproxy_bin)

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


def new_key():
    """80 random bytes: 16 name, 32 HMAC, 32 AES-256."""
    return os.urandom(80)


def write_keys(path, keys):
    with open(path, "w") as f:
        f.write("# ztproxy session ticket keys: the first encrypts\n")
        f.write("".join(base64.b64encode(k).decode() + "\n" for k in keys))
    os.chmod(path, 0o600)
    return path


class Client:
    """One client (one SSLContext) for one TLS version."""

    def __init__(self, cafile, version, cert=None):
        self.ctx = client_context(cafile, minimum=version, maximum=version)
        if cert:
            self.ctx.load_cert_chain(cert.cert, cert.key)

    def fetch(self, port, session=None, end="clean"):
        """GET / through the proxy, offering `session`. Returns (resumed, the session to offer
        next). end: "clean" (close_notify both ways) or "reset" (RST)."""
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        s = self.ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        try:
            conn = HttpConn(s)
            conn.request("GET", "/", "localhost")
            if conn.response().status != 200:
                raise AssertionError("GET / did not answer 200")
            # TLS 1.3 tickets arrive after the handshake, ahead of the response: read by now.
            resumed, new_session = s.session_reused, s.session
            if end == "clean":
                s = s.unwrap()
            elif end == "reset":
                set_linger_reset(s)
            return resumed, new_session
        finally:
            s.close()


def ticket_key_name(session_file):
    """The first 16 bytes of the ticket in an `openssl s_client -sess_out` file: the key's name."""
    text = run_checked(["openssl", "sess_id", "-in", session_file, "-noout", "-text"]).stdout.decode()
    m = re.search(r"TLS session ticket:\n\s*0000 - ((?:[0-9a-f]{2}[ -]){16})", text)
    if not m:
        raise AssertionError("no ticket in the session:\n" + text)
    return bytes.fromhex(m.group(1).replace("-", " ").replace(" ", ""))


class ResumptionTest(LocalhostTestCase):
    def setUp(self):
        super().setUp()
        self.backend = self.start_backend("http")

    def policy(self, **tls):
        return policy_toml(
            listeners=[{"name": "main", "certs": [("main", self.leaf, None)], "tls": tls}],
            backends=[{"name": "app", "addresses": [self.backend.address]}],
            routes=[{"default": True, "backend": "app"}])

    def start(self, name="policy.toml", **tls):
        return self.start_proxy(["run", "-c", self.write_policy(self.policy(**tls), name)])

    def reload(self, proxy):
        mark = len(proxy.err.snapshot())
        proxy.send_signal(signal.SIGHUP)
        m = proxy.wait_line("stderr", r"reload (applied|failed)", start=mark, what="the reload outcome")
        self.assertEqual(m.group(1), "applied", proxy.diag())

    def keys_file(self, keys):
        return write_keys(os.path.join(self.tmp, "ticket.keys"), keys)

    def assert_survives_sighup(self, **tls):
        proxy = self.start(**tls)
        sessions = {}
        for version in (TLS12, TLS13):
            client = Client(self.ca.cert, version)
            resumed, session = client.fetch(proxy.port)
            self.assertFalse(resumed)
            self.assertTrue(client.fetch(proxy.port, session)[0], "%s: no resumption before SIGHUP" % version.name)
            sessions[version] = (client, session)
        self.reload(proxy)
        for version, (client, session) in sessions.items():
            with self.subTest(version=version.name):
                self.assertTrue(client.fetch(proxy.port, session)[0], "%s: session lost across SIGHUP" % version.name)

    def test_a_session_lives_two_hours(self):
        # README: a session lives 2 hours (OpenSSL's default session timeout). The server's own
        # session timeout is what it announces as each new ticket's lifetime hint (RFC 8446
        # 4.6.1, RFC 5077 3.3) and what it checks at resumption: both versions, in seconds.
        proxy = self.start()
        for version in (TLS12, TLS13):
            with self.subTest(version=version.name):
                _, session = Client(self.ca.cert, version).fetch(proxy.port)
                self.assertTrue(session.has_ticket, version.name)
                self.assertEqual(session.ticket_lifetime_hint, 2 * 3600)

    def test_sessions_survive_sighup_with_generated_keys(self):
        self.assert_survives_sighup()

    def test_sessions_survive_sighup_with_a_key_file(self):
        self.assert_survives_sighup(session_ticket_keys=self.keys_file([new_key(), new_key()]))

    def test_instances_sharing_a_key_file_resume_each_others_sessions(self):
        keys = self.keys_file([new_key()])
        a = self.start(session_ticket_keys=keys)
        # The second instance in quick mode: the command-line flag.
        b = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", self.backend.address,
                              "--cert", self.leaf.cert, "--key", self.leaf.key, "--session-ticket-keys", keys])
        c = self.start("other.toml")  # generated keys of its own
        for version in (TLS12, TLS13):
            with self.subTest(version=version.name):
                client = Client(self.ca.cert, version)
                _, from_a = client.fetch(a.port)
                _, from_b = client.fetch(b.port)
                self.assertTrue(client.fetch(b.port, from_a)[0], "a session of instance A did not resume at B")
                self.assertTrue(client.fetch(a.port, from_b)[0], "a session of instance B did not resume at A")
                self.assertFalse(client.fetch(c.port, from_a)[0], "C resumed a session without the keys")

    def test_rotation_prepend_then_remove(self):
        old, new = new_key(), new_key()
        path = self.keys_file([old])
        proxy = self.start(session_ticket_keys=path)
        self.assertEqual(self.ticket_name(proxy), old[:16])  # the only key encrypts
        client = Client(self.ca.cert, TLS13)
        _, with_old = client.fetch(proxy.port)

        self.keys_file([new, old])  # prepend: the new key encrypts, the old one still decrypts
        self.reload(proxy)
        self.assertEqual(self.ticket_name(proxy), new[:16])
        resumed, renewed = client.fetch(proxy.port, with_old)
        self.assertTrue(resumed, "a ticket of the second key did not resume")

        self.keys_file([new])  # the old key removed: its tickets stop resuming
        self.reload(proxy)
        self.assertFalse(client.fetch(proxy.port, with_old)[0], "a ticket of a removed key resumed")
        self.assertTrue(client.fetch(proxy.port, renewed)[0], "the ticket renewed after rotation did not resume")

    def ticket_name(self, proxy):
        """The key name in a fresh TLS 1.3 ticket from `proxy`, read from s_client's session."""
        out = os.path.join(self.tmp, "session.pem")
        if os.path.exists(out):
            os.unlink(out)
        r = s_client(proxy.port, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", 12, servername="localhost",
                     cafile=self.ca.cert, extra=["-tls1_3", "-sess_out", out])
        self.assertTrue(os.path.exists(out), r.describe())
        return ticket_key_name(out)

    def test_session_cache_entry_survives_a_clean_close(self):
        # TLS 1.2 without tickets: the session id is looked up in the proxy's session cache. On
        # the userspace and kernel paths the SSL is freed right after the handshake; the entry
        # must outlive the connection when it ended cleanly, and only then.
        proxy = self.start(session_tickets=False, max_version="1.2")
        client = Client(self.ca.cert, TLS12)
        _, session = client.fetch(proxy.port, end="clean")
        proxy.wait_access(lambda e: e["close"] == "client_close", what="(the clean close)")
        resumed, session = client.fetch(proxy.port, session, end="reset")
        self.assertTrue(resumed, "the session was dropped from the cache after a clean close")
        proxy.wait_access(lambda e: e["close"] in ("client_reset", "client_error"), what="(the reset)")
        self.assertFalse(client.fetch(proxy.port, session)[0], "a session resumed after its connection was reset")


    def test_a_session_never_moves_to_a_listener_trusting_other_client_cas(self):
        # Both listeners of one process share the generated ticket keys; the session id context
        # keeps a session verified against one client CA from resuming where another is trusted.
        cas = [CertAuthority(os.path.join(self.tmp, name), name="clients " + name) for name in ("a", "b")]
        alice = cas[0].issue("alice", "ec", dns=(), ips=(), cn="alice", eku="clientAuth")
        text = policy_toml(
            listeners=[{"name": name, "certs": [("main", self.leaf, None)],
                        "tls": {"client_auth": "require", "client_ca": ca.cert}}
                       for name, ca in zip(("a", "b"), cas)],
            backends=[{"name": "app", "addresses": [self.backend.address]}],
            routes=[{"default": True, "backend": "app"}])
        proxy = self.start_proxy(["run", "-c", self.write_policy(text)], listeners=2)
        for refused, version in enumerate((TLS12, TLS13), 1):
            with self.subTest(version=version.name):
                client = Client(self.ca.cert, version, cert=alice)
                _, session = client.fetch(proxy.port_of("a"))
                self.assertTrue(client.fetch(proxy.port_of("a"), session)[0])
                # Resumed, this would succeed; a full handshake verifies alice and refuses her.
                with self.assertRaises((ssl.SSLError, OSError, EOFError)):
                    client.fetch(proxy.port_of("b"), session)
                proxy.wait_access(lambda e: e.get("close") == "client_cert_rejected" and e.get("listener") == "b",
                                  count=refused, what="(a full handshake at b, refusing alice)")


class KeyFileCheck(LocalhostTestCase):
    """`ztproxy check` reads the key file as `run` would: problems at the policy value, with the
    key file's line; a file every user can read is warned about."""

    def setUp(self):
        super().setUp()
        self.keys = os.path.join(self.tmp, "keys")
        text = policy_toml(
            listeners=[{"name": "main", "certs": [("main", self.leaf, None)],
                        "tls": {"session_ticket_keys": "keys"}}],
            backends=[{"name": "app", "addresses": ["127.0.0.1:8080"]}],
            routes=[{"default": True, "backend": "app"}])
        self.policy = self.write_policy(text)
        line = next(n for n, l in enumerate(text.splitlines(), 1) if "session_ticket_keys" in l)
        col = text.splitlines()[line - 1].index('"') + 1
        self.prefix = "%s:%d:%d: session ticket key file '%s': " % (self.policy, line, col, self.keys)

    def check(self, keys_text=None, mode=0o600):
        if keys_text is not None:
            with open(self.keys, "w") as f:
                f.write(keys_text)
            os.chmod(self.keys, mode)
        return subprocess.run([ztproxy_bin(), "check", "-c", self.policy], capture_output=True, text=True,
                              timeout=60)

    def test_problems_name_the_policy_value_and_the_key_file_line(self):
        good = base64.b64encode(new_key()).decode()
        cases = [
            (good + "\n" + base64.b64encode(os.urandom(48)).decode() + "\n",
             "line 2: key is 48 bytes, expected 80 (16-byte name, 32-byte HMAC key, 32-byte AES-256 key; "
             "openssl rand 80 | base64 -w0)"),
            ("# keys\n" + good[:30] + "?" + good[31:] + "\n", "line 2, column 31: not base64"),
            ("", "no key in the file (one base64 key of 80 bytes per line; openssl rand 80 | base64 -w0)"),
        ]
        for keys_text, message in cases:
            with self.subTest(message=message):
                p = self.check(keys_text)
                self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
                self.assertEqual(p.stdout.splitlines()[0], self.prefix + message)
                self.assertNotIn(good[:20], p.stdout + p.stderr)  # never the key material

    def test_missing_file(self):
        p = self.check()
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual(p.stdout.splitlines()[0], self.prefix + "cannot read: No such file or directory")

    def test_world_readable_file_is_warned_about(self):
        key = base64.b64encode(new_key()).decode() + "\n"
        p = self.check(key, 0o640)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertNotIn("readable by every user", p.stderr)
        p = self.check(key, 0o644)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("readable by every user of this host", p.stderr)


if __name__ == "__main__":
    unittest.main()
