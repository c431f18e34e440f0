#!/usr/bin/env python3
"""kTLS end to end: the real ztproxy binary, curl and `openssl s_client`, inside a kernel that has
kTLS (tests/ktls/run-in-ktls-kernel.sh; the CTest test `ktls_vm_suite` runs label `ktls` there).

What is proven, per connection, from the proxy's access log and /proc/net/tls_stat deltas:
  1. TLS 1.2 and 1.3 x AES-128-GCM / AES-256-GCM / CHACHA20-POLY1305 (s_client, ECDSA cert) and
     curl: data intact, rx_path=kernel tx_path=kernel, spliced_* = bytes_*, copied_* = 0, and the
     kernel's TlsTxSw/TlsRxSw grew (the clients never use kTLS: the counters are the proxy's).
  2. 64 MiB up and 64 MiB down (curl, sha256 on both ends), TLS 1.3 and 1.2, all spliced.
  3. Half-close both ways on the kernel path.
  4. A man in the middle flips a byte of a client record (ciphertext, tag, header length): not one
     byte of it reaches the backend, close=bad_record, TlsDecryptError grew, the proxy serves on.
  5. TLS 1.3 KeyUpdate from the client (s_client's "k"/"K" commands) on a kernel that cannot
     rekey kTLS (< 6.14): close=key_update_unsupported, nothing after it reaches the backend,
     counted in ztproxy_ktls_key_update_closes_total. On a kernel that can (TlsRxRekeyOk in
     tls_stat; not this project's 6.1 VM) the connection goes on under the new keys instead.
  6. ktls = "off" (policy) / --ktls off (quick mode): no kernel path (OpenSSL or the userspace
     record layer), no splice, no tls_stat change.

The class proxy runs with seccomp = "require": every test above also proves that the kernel path's
system calls (TCP_ULP, SOL_TLS, recvmsg with cmsg) are in the allow-list.

Each test also checks that the proxy's kTLS sockets are gone when its connections are
(TlsCurrTxSw/TlsCurrRxSw back to their value before the test).

Exit 77 (CTest skip) on a kernel without kTLS outside the VM; inside the VM (KTLS_VM_GUEST set) a
missing kTLS is a failure. Run by hand inside the VM:
  tests/ktls/run-in-ktls-kernel.sh bash -c 'cd tests/ktls && ZTPROXY_BIN=$PWD/../../build/ztproxy \
      python3 -m unittest -v test_ktls_e2e'
Inside UML every syscall costs tens of microseconds and starting Python costs seconds: the
backends and the main proxy are started once per class, and connections are strictly sequential
(each one's access-log line and backend event are awaited before the next starts), so that "the
next access line" and tls_stat deltas belong to the connection just made.
"""

import errno
import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import backend as backend_mod  # noqa: E402
from harness import (E2ETestCase, Backend, BioTlsClient, CertAuthority, HttpConn, Proxy,  # noqa: E402
                     SClientSession, client_context, curl, curl_args, describe_rc,
                     half_close_exchange, metric, policy_toml, recv_up_to, require_tool, s_client, scrape,
                     tls_close_kind, tls_connect, wait_until)

SKIP = 77
IN_VM = os.environ.get("KTLS_VM_GUEST", "")
TLS_STAT = "/proc/net/tls_stat"
TCP_ULP = getattr(socket, "TCP_ULP", 31)  # <linux/tcp.h>; Python 3.11 does not export it
SOL_TLS = 282                              # <linux/socket.h>
TLS_TX_MAX_PAYLOAD_LEN = 5                 # <linux/tls.h>, newer than Debian 12's headers

TLS12 = {  # ECDSA certificate: OpenSSL name -> IANA name (the log may use either)
    "AES-128-GCM": ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    "AES-256-GCM": ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    "CHACHA20-POLY1305": ("ECDHE-ECDSA-CHACHA20-POLY1305",
                          "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
}
TLS13 = {
    "AES-128-GCM": "TLS_AES_128_GCM_SHA256",
    "AES-256-GCM": "TLS_AES_256_GCM_SHA384",
    "CHACHA20-POLY1305": "TLS_CHACHA20_POLY1305_SHA256",
}
BULK = 64 * 1024 * 1024
CURR = ("TlsCurrTxSw", "TlsCurrRxSw")
COUNTER_FIELDS = ("bytes_up", "bytes_down", "spliced_up", "spliced_down", "copied_up",
                  "copied_down")


def ktls_status():
    """(True, '') when this kernel takes the TLS ULP on a connected TCP socket, else (False, why)."""
    lst = socket.socket()
    try:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        with socket.create_connection(lst.getsockname(), timeout=10) as c:
            peer, _ = lst.accept()
            with peer:
                try:
                    c.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
                except OSError as e:
                    hint = " (kernel without CONFIG_TLS, or the tls module is not loaded)" \
                        if e.errno == errno.ENOENT else ""
                    return False, "setsockopt(TCP_ULP, \"tls\"): %s%s" % (e.strerror, hint)
    finally:
        lst.close()
    if not os.access(TLS_STAT, os.R_OK):
        return False, "%s is not readable" % TLS_STAT
    return True, ""


def kernel_bounds_tx_records():
    """Whether this kernel can bound the plaintext of the records kTLS TX seals
    (setsockopt(SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN); Linux 6.1 answers ENOPROTOOPT, the rekey suite's
    kernel takes it). Asked the way ztproxy asks, on a connected TCP socket with the "tls" ULP.
    What max_fragment_length (RFC 6066) needs: without it a session that negotiated one cannot
    stay in the kernel."""
    with socket.create_server(("127.0.0.1", 0)) as lst:
        with socket.create_connection(lst.getsockname(), timeout=10) as c:
            peer, _ = lst.accept()
            with peer:
                c.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
                try:
                    c.setsockopt(SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN, struct.pack("=H", 512))
                except OSError as e:
                    if e.errno == errno.ENOPROTOOPT:
                        return False
                    raise
    return True


def require_ktls():
    ok, why = ktls_status()
    if ok:
        return
    if IN_VM:
        raise AssertionError("inside the kTLS VM (KTLS_VM_GUEST=%s) but kTLS is unavailable: %s"
                             % (IN_VM, why))
    raise unittest.SkipTest("no kTLS on this kernel: %s; these tests run inside "
                            "tests/ktls/run-in-ktls-kernel.sh (ctest -R ktls_vm_suite)" % why)


def tls_stat():
    with open(TLS_STAT) as f:
        return {k: int(v) for k, v in (line.split() for line in f if line.strip())}


def kernel_can_rekey():
    """Whether this kernel takes a TLS 1.3 KeyUpdate's next key on a kTLS socket (Linux >= 6.14).
    Told by what the kernel counts, not by its version string: the TlsRxRekeyOk counter came with
    the feature (and a distribution kernel may backport it). Inside the project's VMs the suite
    also says which kernel it booted (KTLS_VM_KERNEL, tests/ktls/vm_suite.sh): a disagreement
    fails, because each KeyUpdate test would then prove the other kernel's behaviour."""
    can = "TlsRxRekeyOk" in tls_stat()
    booted = os.environ.get("KTLS_VM_KERNEL") if IN_VM else None
    if booted in ("6.1", "rekey") and can != (booted == "rekey"):
        raise AssertionError("KTLS_VM_KERNEL=%s but Linux %s %s TlsRxRekeyOk in %s"
                             % (booted, os.uname().release, "counts" if can else "has no", TLS_STAT))
    return can


def stat_delta(before, after):
    return {k: after[k] - before.get(k, 0) for k in after}


def as_int(e, k):
    try:
        return int(e[k])
    except (KeyError, TypeError, ValueError):
        raise AssertionError("access entry has no integer %s: %r" % (k, e))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for c in iter(lambda: f.read(1 << 20), b""):
            h.update(c)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# The man in the middle


class TamperForwarder:
    """A TCP forwarder for ONE connection (client -> here -> 127.0.0.1:target) that parses the
    TLS records the client sends and corrupts the `index`-th record of outer type 0x17
    (application_data; in TLS 1.3 the first one is the client's Finished). Modes:

      body          flip one bit in the middle of the record body (the ciphertext)
      tag           flip one bit of the last byte (the AEAD tag)
      len_minus1    header length one smaller than the record
      len_plus1     header length one larger (the next record's first byte is swallowed)
      len_oversize  flip bit 0x40 of the length's high byte: longer than any legal record

    The server->client direction passes unchanged. `tampered` describes what was changed, None
    if the record never came. Sockets time out after 60 s, so nothing here can hang a test.
    """

    MODES = ("body", "tag", "len_minus1", "len_plus1", "len_oversize")

    def __init__(self, target_port, mode, index):
        assert mode in self.MODES, mode
        self.target_port, self.mode, self.index = target_port, mode, index
        self.tampered = None
        self.errors = []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.lsock.settimeout(60)
        self.port = self.lsock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True, name="mitm-" + mode)
        self.thread.start()

    def join(self, timeout=30):
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _run(self):
        try:
            client, _ = self.lsock.accept()
        except OSError as e:
            self.errors.append("accept: %s" % e)
            return
        finally:
            self.lsock.close()
        client.settimeout(60)
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=60)
        except OSError as e:
            self.errors.append("connect: %s" % e)
            client.close()
            return
        down = threading.Thread(target=self._plain, args=(server, client), daemon=True)
        down.start()
        self._up(client, server)
        down.join(60)
        client.close()
        server.close()

    @staticmethod
    def _end(dst):
        """Passes an EOF on (the other direction keeps flowing)."""
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _plain(self, src, dst):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
        except OSError as e:
            self.errors.append("down: %s" % e)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return
        self._end(dst)

    def _tamper(self, rec):
        length = int.from_bytes(rec[3:5], "big")
        if self.mode == "body":
            i = 5 + length // 2
            rec[i] ^= 0x01
        elif self.mode == "tag":
            rec[-1] ^= 0x01
        elif self.mode == "len_minus1":
            rec[3:5] = (length - 1).to_bytes(2, "big")
        elif self.mode == "len_plus1":
            rec[3:5] = (length + 1).to_bytes(2, "big")
        elif self.mode == "len_oversize":
            rec[3] ^= 0x40
        self.tampered = "record %d of type 0x17, length %d, mode %s, header now %s" % (
            self.index, length, self.mode, bytes(rec[:5]).hex())
        return rec

    def _up(self, src, dst):
        buf = bytearray()
        seen = 0
        passthrough = False
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                buf += d
                out = bytearray()
                while not passthrough and len(buf) >= 5:
                    length = int.from_bytes(buf[3:5], "big")
                    if len(buf) < 5 + length:
                        break
                    rec = bytearray(buf[:5 + length])
                    del buf[:5 + length]
                    if rec[0] == 0x17:
                        if seen == self.index:
                            rec = self._tamper(rec)
                            passthrough = True  # the stream no longer parses after a length change
                        seen += 1
                    out += rec
                if passthrough:
                    out += buf
                    buf.clear()
                if out:
                    dst.sendall(out)
            if buf:
                dst.sendall(buf)
        except OSError as e:
            self.errors.append("up: %s" % e)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return
        self._end(dst)


# --------------------------------------------------------------------------------------------
# s_client driven step by step (for KeyUpdate)


# --------------------------------------------------------------------------------------------


class KtlsE2ETest(E2ETestCase):
    """One proxy for the class: listener "main" (ktls default = auto) and listener "plain"
    (ktls = "off"); SNI echo.test -> echo backend, anything else -> HTTP backend."""

    @classmethod
    def setUpClass(cls):
        require_ktls()
        super().setUpClass()
        cls.ca = CertAuthority(os.path.join(cls.class_tmp, "pki"))
        cls.leaf = cls.ca.issue("leaf", "ec", dns=["echo.test", "http.test", "localhost"])
        cls.echo = Backend("echo")
        cls.addClassCleanup(cls.echo.stop)
        cls.http = Backend("http")
        cls.addClassCleanup(cls.http.stop)
        cls.policy = os.path.join(cls.class_tmp, "policy.toml")
        certs = [("leaf", cls.leaf, None)]
        with open(cls.policy, "w") as f:
            f.write(policy_toml(
                listeners=[{"name": "main", "certs": certs},
                           {"name": "plain", "certs": certs, "tls": {"ktls": "off"}}],
                backends=[{"name": "echo", "addresses": [cls.echo.address]},
                          {"name": "http", "addresses": [cls.http.address]}],
                routes=[{"server_names": ["echo.test"], "backend": "echo"},
                        {"default": True, "backend": "http"}],
                # An idle timeout that cannot cut a slow 64 MiB transfer in UML short, but ends a
                # connection a test lost track of long before CTest's timeout.
                # The seccomp filter must be there (not "auto"): every test of this class then proves
                # the kernel path's calls (TCP_ULP, SOL_TLS, recvmsg with cmsg) are allowed.
                # The admin endpoint: the metrics test reads the splice counters as an operator would.
                sections={"limits": {"idle_timeout": "60s"}, "process": {"seccomp": "require"},
                          "admin": {"address": "127.0.0.1:0"}}))
        cls.proxy = Proxy(["run", "-c", cls.policy], listeners=2)
        cls.addClassCleanup(cls.proxy.stop)
        cls.port = cls.proxy.port_of("main")
        cls.plain_port = cls.proxy.port_of("plain")
        cls.admin = cls.proxy.admin_address()

    def setUp(self):
        super().setUp()
        self.assertTrue(self.proxy.alive(), "the class proxy died earlier\n" + self.proxy.diag())
        # Per test, so that a kTLS socket leaked by one test fails that test only.
        self.curr_before = {k: v for k, v in tls_stat().items() if k in CURR}

    def tearDown(self):
        # Every kTLS socket the proxy opened during the test must be gone once its connections
        # closed (a connection that is never released keeps its socket): TlsCurr{Tx,Rx}Sw back
        # to where the test started.
        try:
            self.assertTrue(self.proxy.alive(), "ztproxy died during the test\n" + self.proxy.diag())
            try:
                wait_until(lambda: {k: v for k, v in tls_stat().items() if k in CURR}
                           == self.curr_before, 15, "the proxy's kTLS sockets to be closed")
            except AssertionError as e:
                raise AssertionError("%s: %s before the test, %s now (connections never released)"
                                     % (e, self.curr_before,
                                        {k: v for k, v in tls_stat().items() if k in CURR}))
        finally:
            super().tearDown()

    # ------------------------------------------------------------------ helpers

    def mark(self, proxy=None):
        return len((proxy or self.proxy).access_entries())

    def next_access(self, mark, what, proxy=None, timeout=30):
        """The access entry of the one connection made since `mark`."""
        proxy = proxy or self.proxy
        entries = proxy.wait_access(count=mark + 1, timeout=timeout, what=what)
        self.assertEqual(len(entries), mark + 1,
                         "more than one new access entry %s:\n%s" % (
                             what, "\n".join(map(repr, entries[mark:]))))
        return entries[mark]

    def echo_mark(self):
        return len(self.echo.out.snapshot())

    def echo_closed(self, mark, what):
        m = self.echo.wait_event(r"^ECHO_CLOSED peer=\S+ bytes=(\d+) reason=(\S+)$",
                                 timeout=30, start=mark)
        return int(m.group(1)), m.group(2)

    def assert_kernel_entry(self, e, what, close="client_close"):
        msg = "%s: %r\n(fallback reasons are logged at debug level)" % (what, e)
        self.assertEqual((e.get("rx_path"), e.get("tx_path")), ("kernel", "kernel"), msg)
        self.assertNotIn("ktls_fallback", e, msg)
        c = {k: as_int(e, k) for k in COUNTER_FIELDS}
        self.assertEqual((c["copied_up"], c["copied_down"]), (0, 0), msg)
        self.assertEqual((c["spliced_up"], c["spliced_down"]), (c["bytes_up"], c["bytes_down"]),
                         msg)
        if close is not None:
            self.assertEqual(e.get("close"), close, msg)
        return c

    def assert_ktls_counted(self, before, after, n, what):
        d = stat_delta(before, after)
        self.assertGreaterEqual(d["TlsTxSw"], n, "%s: TlsTxSw grew by %d, expected >= %d; delta %r"
                                % (what, d["TlsTxSw"], n, d))
        self.assertGreaterEqual(d["TlsRxSw"], n, "%s: TlsRxSw grew by %d, expected >= %d; delta %r"
                                % (what, d["TlsRxSw"], n, d))
        return d

    def echo_roundtrip_kernel(self, what, port=None, proxy=None):
        """A fresh client through the proxy (echo backend): bytes come back, kernel path."""
        proxy = proxy or self.proxy
        mark, emark = self.mark(proxy), self.echo_mark()
        payload = os.urandom(3000)
        before = tls_stat()
        with tls_connect(port or self.port, "echo.test", self.ca.cert, timeout=30) as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                d = s.recv(65536)
                if not d:
                    break
                got += d
            s.unwrap()
        self.assertEqual(got, payload, "%s: echo through the proxy failed\n%s" % (what, proxy.diag()))
        e = self.next_access(mark, "for the echo round trip " + what, proxy)
        c = self.assert_kernel_entry(e, what)
        self.assertEqual((c["bytes_up"], c["bytes_down"]), (len(payload), len(payload)), e)
        self.assertEqual(self.echo_closed(emark, what), (len(payload), "eof"))
        self.assert_ktls_counted(before, tls_stat(), 1, what)

    # ------------------------------------------------------------------ 1. matrix

    def test_s_client_every_version_and_cipher_on_the_kernel_path(self):
        payload_line = b"0123456789abcdef" * 64 + b"\n"  # 1 KiB
        for version in ("1.2", "1.3"):
            for cipher in ("AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305"):
                with self.subTest(version=version, cipher=cipher):
                    if version == "1.2":
                        flags = ["-tls1_2", "-cipher", TLS12[cipher][0]]
                        names = set(TLS12[cipher])
                    else:
                        flags = ["-tls1_3", "-ciphersuites", TLS13[cipher]]
                        names = {TLS13[cipher]}
                    payload = payload_line * 64  # 64 KiB: several records each way
                    mark, emark = self.mark(), self.echo_mark()
                    before = tls_stat()
                    r = s_client(self.port, payload, len(payload), servername="echo.test",
                                 cafile=self.ca.cert, extra=flags, timeout=60)
                    self.assertEqual((len(r.stdout), r.stdout == payload), (len(payload), True),
                                     r.describe() + "\n" + self.proxy.diag())
                    self.assertFalse(r.timed_out, r.describe())
                    self.assertEqual(r.protocol, "TLSv" + version, r.describe())
                    self.assertIn(r.cipher, names, r.describe())
                    what = "s_client TLS %s %s" % (version, cipher)
                    e = self.next_access(mark, "for " + what)
                    self.assertEqual(e["version"], "TLSv" + version, e)
                    self.assertIn(e["cipher"], names, e)
                    c = self.assert_kernel_entry(e, what)
                    self.assertEqual((c["bytes_up"], c["bytes_down"]),
                                     (len(payload), len(payload)), e)
                    self.assertEqual(self.echo_closed(emark, what), (len(payload), "eof"))
                    self.assert_ktls_counted(before, tls_stat(), 1, what)

    def test_the_kernel_path_runs_under_the_seccomp_filter(self):
        with open("/proc/%d/status" % self.proxy.pid) as f:
            status = f.read()
        self.assertIn("Seccomp:\t2\n", status, "the class proxy runs without its seccomp filter")
        self.echo_roundtrip_kernel("under seccomp")

    def test_a_record_in_the_segment_of_the_clients_finished_goes_to_the_kernel(self):
        # TLS 1.3: the client's Finished and its first record leave in one send(), or (dribble)
        # the whole handshake and the record one byte per send(). OpenSSL reads the handshake's
        # records exactly (never ahead on a listener that hands sessions over), so the record
        # waits in the socket and the kernel decrypts it after the hand-over.
        ctx = client_context(self.ca.cert, minimum=ssl.TLSVersion.TLSv1_3)
        for dribble in (False, True):
            with self.subTest(dribble=dribble):
                mark, before = self.mark(), tls_stat()
                client = BioTlsClient(self.port, "echo.test", ctx, timeout=30, hold_final_flight=True,
                                      dribble=dribble)
                try:
                    client.write(b"ping")
                    self.assertEqual(client.read_exactly(4), b"ping", self.proxy.diag())
                finally:
                    client.close()
                what = "a record behind the Finished" + (", a byte at a time" if dribble else "")
                c = self.assert_kernel_entry(self.next_access(mark, "for " + what), what, close=None)
                self.assertEqual((c["bytes_up"], c["bytes_down"]), (4, 4))
                self.assert_ktls_counted(before, tls_stat(), 1, what)

    def test_curl_tls12_and_tls13_on_the_kernel_path(self):
        cases = [("1.3", ["--tlsv1.3", "--tls13-ciphers", TLS13["CHACHA20-POLY1305"]]),
                 ("1.2", ["--tlsv1.2", "--tls-max", "1.2", "--ciphers",
                          TLS12["AES-128-GCM"][0]])]
        for version, flags in cases:
            with self.subTest(version=version):
                mark = self.mark()
                before = tls_stat()
                hdr = os.path.join(self.tmp, "headers-%s" % version)
                r = curl(flags + ["-D", hdr] + curl_args("http.test", self.port, "/",
                                                        self.ca.cert), timeout=60)
                self.assertEqual(r.returncode, 0, "curl failed: %s\n%s" % (
                    r.stderr.decode(errors="replace"), self.proxy.diag()))
                self.assertEqual(r.stdout, b"ztproxy e2e backend\n")
                what = "curl TLS %s" % version
                e = self.next_access(mark, "for " + what)
                self.assertEqual(e["version"], "TLSv" + version, e)
                c = self.assert_kernel_entry(e, what)
                self.assertEqual(c["bytes_down"], os.path.getsize(hdr) + len(r.stdout), e)
                self.assert_ktls_counted(before, tls_stat(), 1, what)

    # ------------------------------------------------------------------ 2. 64 MiB each way

    def test_bulk_64mib_down_and_up(self):
        upload = os.path.join(self.tmp, "upload.bin")
        h = hashlib.sha256()
        with open(upload, "wb") as f:
            for c in backend_mod.pattern_chunks(BULK, 1 << 20):
                h.update(c)
                f.write(c)
        up_sha = h.hexdigest()
        down_sha = backend_mod.pattern_sha256(BULK)
        versions = [("1.3", ["--tlsv1.3", "--tls13-ciphers", TLS13["AES-128-GCM"]]),
                    ("1.2", ["--tlsv1.2", "--tls-max", "1.2", "--ciphers",
                             TLS12["AES-256-GCM"][0]])]
        for version, flags in versions:
            with self.subTest(version=version, direction="down"):
                mark = self.mark()
                before = tls_stat()
                out = os.path.join(self.tmp, "down-%s.bin" % version)
                hdr = os.path.join(self.tmp, "down-%s.hdr" % version)
                r = curl(flags + ["-o", out, "-D", hdr] +
                         curl_args("http.test", self.port, "/bytes/%d" % BULK, self.ca.cert),
                         timeout=150)
                self.assertEqual(r.returncode, 0, "curl failed: %s\n%s" % (
                    r.stderr.decode(errors="replace"), self.proxy.diag()))
                self.assertEqual((os.path.getsize(out), sha256_file(out)), (BULK, down_sha))
                what = "64 MiB download TLS %s" % version
                e = self.next_access(mark, "for the " + what)
                self.assertEqual(e["version"], "TLSv" + version, e)
                c = self.assert_kernel_entry(e, what)
                self.assertEqual(c["bytes_down"], os.path.getsize(hdr) + BULK, e)
                self.assert_ktls_counted(before, tls_stat(), 1, what)
                os.unlink(out)
            with self.subTest(version=version, direction="up"):
                mark = self.mark()
                hmark = len(self.http.out.snapshot())
                before = tls_stat()
                r = curl(flags + ["-H", "Expect:", "-H", "Content-Type: application/octet-stream",
                                  "--data-binary", "@" + upload] +
                         curl_args("http.test", self.port, "/sha256", self.ca.cert), timeout=150)
                self.assertEqual(r.returncode, 0, "curl failed: %s\n%s" % (
                    r.stderr.decode(errors="replace"), self.proxy.diag()))
                self.assertEqual(json.loads(r.stdout), {"sha256": up_sha, "length": BULK},
                                 r.stdout[:300])
                self.http.wait_event(r"^SHA256_DONE peer=\S+ length=%d$" % BULK, start=hmark)
                what = "64 MiB upload TLS %s" % version
                e = self.next_access(mark, "for the " + what)
                self.assertEqual(e["version"], "TLSv" + version, e)
                c = self.assert_kernel_entry(e, what)
                self.assertGreater(c["bytes_up"], BULK, e)
                self.assertLess(c["bytes_up"], BULK + 4096, e)  # + the request head
                self.assert_ktls_counted(before, tls_stat(), 1, what)

    # ------------------------------------------------------------------ 3. half-close

    def test_client_half_close_on_the_kernel_path(self):
        # The client sends data and close_notify, then reads: the backend must see EOF (FIN) and
        # its answer must still arrive, followed by close_notify.
        size = 1 << 20
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            with self.subTest(version=version.name):
                mark, emark = self.mark(), self.echo_mark()
                before = tls_stat()
                payload = os.urandom(size)
                got, how = half_close_exchange(
                    self.port, "echo.test", client_context(self.ca.cert, minimum=version, maximum=version),
                    payload, timeout=60)
                self.assertEqual((len(got), got == payload, how), (size, True, "close_notify"),
                                 self.proxy.diag())
                what = "client half-close %s" % version.name
                self.assertEqual(self.echo_closed(emark, what), (size, "eof"))
                e = self.next_access(mark, "for the " + what)
                c = self.assert_kernel_entry(e, what, close="client_close")
                self.assertEqual((c["bytes_up"], c["bytes_down"]), (size, size), e)
                self.assert_ktls_counted(before, tls_stat(), 1, what)

    def test_backend_close_becomes_close_notify_on_the_kernel_path(self):
        size = 4 * 1024 * 1024
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            with self.subTest(version=version.name):
                mark = self.mark()
                before = tls_stat()
                with tls_connect(self.port, "http.test", self.ca.cert, timeout=60,
                                 minimum=version, maximum=version) as s:
                    conn = HttpConn(s)
                    conn.request("GET", "/bytes/%d" % size, "http.test",
                                 headers={"Connection": "close"})
                    status, _, headers = conn.read_head()
                    self.assertEqual((status, int(headers["content-length"])), (200, size))
                    h = hashlib.sha256()
                    for piece in conn.read_body_chunks(size):
                        h.update(piece)
                    self.assertEqual(h.hexdigest(), backend_mod.pattern_sha256(size))
                    self.assertEqual(conn.buf, b"")
                    kind, extra = tls_close_kind(s, 30)
                    self.assertEqual((kind, extra), ("close_notify", 0), self.proxy.diag())
                what = "backend close %s" % version.name
                e = self.next_access(mark, "for the " + what)
                c = self.assert_kernel_entry(e, what, close="backend_close")
                self.assertEqual(c["bytes_down"], conn.head_len + size, e)
                self.assert_ktls_counted(before, tls_stat(), 1, what)

    def test_metrics_count_the_splice_route_per_direction(self):
        # What README "Is kTLS active?" tells operators to read: one more session in the kernel,
        # its bytes under ztproxy_spliced_bytes_total{direction}, none
        # under ztproxy_copied_bytes_total. Up and down differ here, so a swapped label shows.
        names = ("ztproxy_spliced_bytes_total", "ztproxy_copied_bytes_total")

        def counters():
            status, text = scrape(self.admin)
            self.assertEqual(status, 200)
            out = {(n, d): metric(text, n, direction=d) for n in names for d in ("client_to_backend", "backend_to_client")}
            out["installs"] = metric(text, "ztproxy_ktls_installs_total")
            out["fallbacks"] = sum(metric(text, "ztproxy_ktls_fallbacks_total", reason=r)
                                   for r in ("no_kernel_support", "cipher_unsupported",
                                             "buffered_input", "key_extraction_failed",
                                             "install_failed"))
            return out

        before = counters()
        mark = self.mark()
        with tls_connect(self.port, "http.test", self.ca.cert, timeout=30) as s:
            conn = HttpConn(s)
            conn.request("GET", "/bytes/70000", "http.test", headers={"Connection": "close"})
            r = conn.response()
        self.assertEqual((r.status, len(r.body)), (200, 70000), self.proxy.diag())
        e = self.next_access(mark, "for the metrics request")
        c = self.assert_kernel_entry(e, "metrics request", close=None)
        self.assertGreater(c["bytes_down"], c["bytes_up"], e)
        after = counters()
        delta = {k: after[k] - before[k] for k in after}
        self.assertEqual(delta, {("ztproxy_spliced_bytes_total", "client_to_backend"): c["bytes_up"],
                                 ("ztproxy_spliced_bytes_total", "backend_to_client"): c["bytes_down"],
                                 ("ztproxy_copied_bytes_total", "client_to_backend"): 0,
                                 ("ztproxy_copied_bytes_total", "backend_to_client"): 0,
                                 "installs": 1, "fallbacks": 0}, e)

    def test_small_messages_splice_in_the_event_loop_without_io_wq_threads(self):
        # Issue 15: io_uring runs every IORING_OP_SPLICE in an io-wq worker thread ("iou-wrk-N"),
        # a thread handoff per message. The kernel path splices with non-blocking splice(2) from the
        # event loop instead, so a keep-alive exchange of small messages creates no such thread.
        # Proven by counting the proxy's threads while it relays, not by timing. The context
        # switches per message are printed for the record (README "Small transfers on the kernel
        # path").
        def tasks():
            out = {}
            for tid in os.listdir("/proc/%d/task" % self.proxy.pid):
                try:
                    with open("/proc/%d/task/%s/comm" % (self.proxy.pid, tid)) as f:
                        comm = f.read().strip()
                    with open("/proc/%d/task/%s/status" % (self.proxy.pid, tid)) as f:
                        status = dict(line.split(":", 1) for line in f if ":" in line)
                except FileNotFoundError:
                    continue  # the thread ended while we looked
                out[tid] = (comm, int(status["voluntary_ctxt_switches"]) +
                            int(status["nonvoluntary_ctxt_switches"]))
            return out

        messages, size = 200, 1024
        mark, emark = self.mark(), self.echo_mark()
        io_wq = set()
        with tls_connect(self.port, "echo.test", self.ca.cert, timeout=30) as s:
            s.sendall(b"x" * size)  # the first exchange sets the relay up
            self.assertEqual(len(recv_up_to(s, size)), size)
            before = tasks()
            for i in range(messages):
                payload = bytes([65 + i % 26]) * size
                s.sendall(payload)
                self.assertEqual(recv_up_to(s, size), payload)
                if i % 10 == 0:
                    io_wq |= {tid for tid, (comm, _) in tasks().items() if comm.startswith("iou-wrk")}
            after = tasks()
        e = self.next_access(mark, "for the small-message exchange")
        c = self.assert_kernel_entry(e, "small messages", close=None)
        self.assertEqual(c["bytes_up"], (messages + 1) * size, e)
        got, _ = self.echo_closed(emark, "the small-message exchange")
        self.assertEqual(got, (messages + 1) * size)
        switches = sum(after[t][1] - before[t][1] for t in after if t in before)
        print("\n  kernel path, %d x %d B echoed: %d proxy threads (%d io_uring workers seen), %.2f "
              "context switches per message (threads alive throughout)"
              % (messages, size, len(after), len(io_wq), switches / messages), file=sys.stderr)
        self.assertEqual(io_wq, set(), "io_uring worker threads relayed the kernel path's messages")
        self.assertEqual(set(after), set(before), "threads came or went while relaying")

    # ------------------------------------------------------------------ 4. tampering

    def test_tampered_records_never_reach_the_backend(self):
        # Cases run in a plain loop and the first failure ends the test: a proxy that mishandles
        # one would make every later case wait for its timeouts.
        part1 = b"A" * 1000 + b"\n"  # two records: len_plus1 needs a byte after the first
        part2 = b"B" * 1000 + b"\n"
        versions = ((ssl.TLSVersion.TLSv1_3, 1),  # record 0 of type 0x17 is the client Finished
                    (ssl.TLSVersion.TLSv1_2, 0))  # the Finished is type 0x16: 0 is app data
        seen = []
        for version, index in versions:
            for mode in TamperForwarder.MODES:
                seen.append(self._tamper_case(version, index, mode, part1, part2))
        # For the report (-v): what the client saw in each case.
        print("\n  " + "\n  ".join(seen), file=sys.stderr)

    def _tamper_case(self, version, index, mode, part1, part2):
        what = "tamper %s %s" % (version.name, mode)
        mark, emark = self.mark(), self.echo_mark()
        before = tls_stat()
        fwd = TamperForwarder(self.port, mode, index)
        s = tls_connect(fwd.port, "echo.test", self.ca.cert, timeout=30,
                        minimum=version, maximum=version)
        with s:
            try:
                s.sendall(part1)
                s.sendall(part2)
            except OSError:
                pass  # the proxy may already have closed: that is the point
            kind, n = tls_close_kind(s, 20)
        fwd.join(10)
        d = stat_delta(before, tls_stat())
        ctx = "%s (%s): the client saw %s after %d application bytes; tls_stat delta %r; " \
              "forwarder errors %r" % (what, fwd.tampered, kind, n,
                                       {k: v for k, v in d.items() if v}, fwd.errors)
        self.assertIsNotNone(fwd.tampered, ctx + ": the record to tamper never came")
        self.assertNotEqual(kind, "timeout", ctx + ": the connection stayed open\n" +
                            self.proxy.diag())
        self.assertEqual(n, 0, ctx + ": plaintext came back")
        e = self.next_access(mark, "for the " + what, timeout=20)
        msg = "%s; access %r" % (ctx, e)
        self.assertEqual((e.get("rx_path"), e.get("tx_path")), ("kernel", "kernel"), msg)
        self.assertEqual((as_int(e, "bytes_up"), as_int(e, "spliced_up"), as_int(e, "copied_up")),
                         (0, 0, 0), msg)
        # The backend's own account: it got nothing, not even a prefix of the record.
        got, _ = self.echo_closed(emark, what)
        self.assertEqual(got, 0, "%s: the backend received %d bytes" % (msg, got))
        if mode == "len_oversize":
            # Rejected by the kernel's record parser before any decryption (EMSGSIZE): a framing
            # error rather than an authentication failure, but it must end the connection as one.
            self.assertNotIn(e.get("close"), ("client_close", "backend_close"), msg)
        else:
            self.assertEqual(e.get("close"), "bad_record", msg)
            self.assertGreaterEqual(d["TlsDecryptError"], 1, msg)
        self.echo_roundtrip_kernel("after " + what)
        return "%-28s close=%s client saw %s" % (what, e.get("close"), kind)

    # ------------------------------------------------------------------ 5. KeyUpdate

    def key_update_session(self, proxy, cmd):
        """s_client through `proxy`: "hello" echoed, then `cmd` ("k" = SSL_key_update(
        NOT_REQUESTED), "K" = REQUESTED; honoured without -quiet/-ign_eof and only as the first
        byte of what one read() of stdin got, hence the wait for s_client's "KEYUPDATE" before the
        next line), then a line under the client's next key. Returns the still-open session."""
        sc = SClientSession(proxy.port, "echo.test", self.ca.cert,
                            ["-tls1_3", "-ciphersuites", TLS13["AES-128-GCM"]])
        try:
            self.assertTrue(sc.write(b"hello\n"), sc.describe())
            self.assertTrue(sc.wait(lambda o, _: len(o) >= 6, 30),
                            "no echo before the KeyUpdate\n" + sc.describe())
            self.assertTrue(sc.write(cmd), sc.describe())
            self.assertTrue(sc.wait(lambda _, err: b"KEYUPDATE" in err, 30),
                            "s_client did not run the KeyUpdate command\n" + sc.describe())
            sc.write(b"after the key update\n")
        except BaseException:
            sc.close()
            raise
        return sc

    def test_tls13_key_update_closes_cleanly_on_this_kernel(self):
        # A kernel that cannot take a new kTLS RX key (before Linux 6.14) refuses ztproxy's try
        # with EBUSY: the proxy must end the connection after the KeyUpdate record, never release
        # bytes of the records that follow it, count it and say why.
        if kernel_can_rekey():
            self.skipTest("this kernel rekeys kTLS (%s counts TlsRxRekeyOk): the close does "
                          "not apply" % TLS_STAT)
        # Its own proxy, quick mode (the default --ktls is auto) at debug level: the reason for
        # the close is a debug log line.
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", self.echo.address,
                                  "--cert", self.leaf.cert, "--key", self.leaf.key,
                                  "--admin", "127.0.0.1:0"], log_level="debug")
        admin = proxy.admin_address()
        for cmd, kind in ((b"k\n", "not requested"), (b"K\n", "requested")):
            what = "KeyUpdate (%s)" % kind
            mark, emark = self.mark(proxy), self.echo_mark()
            err_mark = len(proxy.err.snapshot())
            sc = self.key_update_session(proxy, cmd)  # the last line: new keys, never forwarded
            try:
                rc = sc.wait_exit(20)
                self.assertIsNotNone(rc, "%s: the proxy left the connection open\n%s\n%s"
                                     % (what, sc.describe(), proxy.diag()))
            finally:
                sc.close()
            self.assertEqual(bytes(sc.out), b"hello\n", sc.describe())
            e = self.next_access(mark, "for the " + what, proxy, timeout=20)
            self.assertEqual(self.echo_closed(emark, what), (6, "eof"),
                             "the backend got more than the bytes before the KeyUpdate")
            self.assertEqual(e.get("close"), "key_update_unsupported", e)
            self.assertEqual((e.get("rx_path"), e.get("tx_path")), ("kernel", "kernel"), e)
            self.assertEqual((as_int(e, "bytes_up"), as_int(e, "bytes_down")), (6, 6), e)
            self.assertEqual((as_int(e, "copied_up"), as_int(e, "copied_down")), (0, 0), e)
            proxy.wait_line("stderr", r"(?i)key ?update", start=err_mark,
                            what="a log line saying why the connection ended")
            self.echo_roundtrip_kernel("after the " + what, port=proxy.port, proxy=proxy)
        status, text = scrape(admin)
        self.assertEqual(status, 200)
        self.assertEqual(metric(text, "ztproxy_ktls_key_update_closes_total"), 2, text)
        self.assertEqual(metric(text, "ztproxy_connections_closed_total",
                                reason="key_update_unsupported"), 2, text)
        self.assertEqual(metric(text, "ztproxy_key_updates_total"), 0, text)

    def test_tls13_key_update_rekeys_where_the_kernel_can(self):
        # Linux >= 6.14 takes the next RX key after a client KeyUpdate (and, for update_requested,
        # our own KeyUpdate plus the next TX key): the connection goes on, all of it spliced.
        # Runs in ktls_vm_suite_rekey (Debian sid's kernel); the 6.1 suite skips it and runs
        # test_tls13_key_update_closes_cleanly_on_this_kernel instead.
        if not kernel_can_rekey():
            self.skipTest("this kernel cannot rekey kTLS (no TlsRxRekeyOk in %s): needs Linux "
                          ">= 6.14" % TLS_STAT)
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", self.echo.address,
                                  "--cert", self.leaf.cert, "--key", self.leaf.key,
                                  "--admin", "127.0.0.1:0"])
        admin = proxy.admin_address()
        after = b"after the key update\n"
        rekeys = {"TlsRxRekeyOk": 0, "TlsTxRekeyOk": 0}
        for cmd, kind, ours in ((b"k\n", "not requested", False), (b"K\n", "requested", True)):
            what = "KeyUpdate (%s)" % kind
            mark, emark = self.mark(proxy), self.echo_mark()
            before = tls_stat()
            sc = self.key_update_session(proxy, cmd)
            try:
                # The echo of the last line left the proxy under its next TX key when it was asked
                # for one: s_client decrypts it only after following our KeyUpdate.
                self.assertTrue(sc.wait(lambda o, _: len(o) >= 6 + len(after), 30),
                                "%s: no echo after the KeyUpdate\n%s\n%s"
                                % (what, sc.describe(), proxy.diag()))
            finally:
                sc.close()
            self.assertEqual(bytes(sc.out), b"hello\n" + after, sc.describe())
            e = self.next_access(mark, "for the " + what, proxy, timeout=20)
            n = 6 + len(after)
            self.assertEqual(self.echo_closed(emark, what), (n, "eof"))
            self.assertEqual(e.get("close"), "client_close", e)
            c = self.assert_kernel_entry(e, what)
            self.assertEqual((c["bytes_up"], c["bytes_down"]), (n, n), e)
            d = stat_delta(before, tls_stat())
            msg = "%s: tls_stat delta %r" % (what, d)
            # Exact: s_client keeps its keys in user space (no kTLS without OPENSSL_CONF), so the
            # kernel-wide counters (under the ktls_tls_stat lock) are the proxy's alone.
            self.assertEqual((d["TlsRxRekeyOk"], d["TlsTxRekeyOk"]), (1, 1 if ours else 0), msg)
            self.assertEqual((d["TlsRxRekeyError"], d["TlsTxRekeyError"], d["TlsDecryptError"]), (0, 0, 0), msg)
            for k in rekeys:
                rekeys[k] += d[k]
        status, text = scrape(admin)
        self.assertEqual(metric(text, "ztproxy_key_updates_total"), rekeys["TlsRxRekeyOk"], (rekeys, text))
        self.assertEqual(metric(text, "ztproxy_key_updates_total"), 2, text)
        self.assertEqual(metric(text, "ztproxy_ktls_key_update_closes_total"), 0, text)
        print("kTLS rekeys (s_client k, K): %r, ztproxy_key_updates_total %d"
              % (rekeys, metric(text, "ztproxy_key_updates_total")), file=sys.stderr)

    def test_admission_filter_leaves_the_kernel_path_alone(self):
        # The admission socket filter is inherited by accepted sockets and sees their segments:
        # kTLS RX/TX and splice must work under it, and a denied source still gets nowhere.
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", self.echo.address,
                                  "--cert", self.leaf.cert, "--key", self.leaf.key,
                                  "--deny", "127.0.0.2/32"])
        self.assertNotIn("eBPF admission unavailable", "".join(proxy.err.snapshot()))
        self.echo_roundtrip_kernel("under the admission filter", port=proxy.port, proxy=proxy)
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.settimeout(2)
        with self.assertRaises(socket.timeout, msg="a denied source completed a TCP handshake"):
            s.connect(("127.0.0.1", proxy.port))
        s.close()

    # ------------------------------------------------------------------ 6. ktls = off

    def assert_not_kernel_entry(self, e, what):
        # ktls = "off" keeps the kernel out; the session stays with OpenSSL or ztproxy's own
        # userspace record layer (record_path = auto picks it), never splice.
        msg = "%s: %r" % (what, e)
        self.assertIn(e.get("rx_path"), ("openssl", "userspace"), msg)
        self.assertIn(e.get("tx_path"), ("openssl", "userspace"), msg)
        self.assertEqual((as_int(e, "spliced_up"), as_int(e, "spliced_down")), (0, 0), msg)

    def test_ktls_off_keeps_the_kernel_out_and_tls_stat_alone(self):
        payload = b"off-path\n" * 100
        mark, emark = self.mark(), self.echo_mark()
        before = tls_stat()
        r = s_client(self.plain_port, payload, len(payload), servername="echo.test",
                     cafile=self.ca.cert, extra=["-tls1_3"], timeout=60)
        self.assertEqual(r.stdout, payload, r.describe() + "\n" + self.proxy.diag())
        e = self.next_access(mark, "for the ktls=off listener")
        self.assertEqual(self.echo_closed(emark, "ktls off"), (len(payload), "eof"))
        self.assertEqual(e.get("listener"), "plain", e)
        self.assert_not_kernel_entry(e, "listener with ktls = off")
        self.assertEqual((as_int(e, "bytes_up"), as_int(e, "bytes_down")),
                         (len(payload), len(payload)), e)
        d = stat_delta(before, tls_stat())
        self.assertEqual({k: v for k, v in d.items() if v}, {}, "tls_stat changed: %r" % d)

    def test_quick_mode_ktls_flag(self):
        for mode in ("off", "auto"):
            with self.subTest(ktls=mode):
                proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend",
                                          self.echo.address, "--cert", self.leaf.cert, "--key",
                                          self.leaf.key, "--ktls", mode])
                payload = b"quick %s\n" % mode.encode()
                mark, emark = self.mark(proxy), self.echo_mark()
                before = tls_stat()
                r = s_client(proxy.port, payload, len(payload), servername="echo.test",
                             cafile=self.ca.cert, extra=["-tls1_2"], timeout=60)
                self.assertEqual(r.stdout, payload, r.describe() + "\n" + proxy.diag())
                e = self.next_access(mark, "for quick mode --ktls " + mode, proxy)
                self.assertEqual(self.echo_closed(emark, "quick " + mode), (len(payload), "eof"))
                if mode == "auto":
                    self.assert_kernel_entry(e, "quick mode --ktls auto")
                    self.assert_ktls_counted(before, tls_stat(), 1, "quick mode --ktls auto")
                else:
                    self.assert_not_kernel_entry(e, "quick mode --ktls off")
                    d = stat_delta(before, tls_stat())
                    self.assertEqual({k: v for k, v in d.items() if v}, {},
                                     "tls_stat changed: %r" % d)
                proxy.stop()


def main(module=__name__):
    """Runs the tests of `module` where kTLS is (exit 0/1), else exits 77 outside the VM."""
    if not IN_VM:
        ok, why = ktls_status()
        if not ok:
            print("SKIP: no kTLS on this kernel (%s); run inside tests/ktls/run-in-ktls-kernel.sh "
                  "(ctest -R ktls_vm_suite)" % why)
            return SKIP
    prog = unittest.main(module=module, verbosity=2, exit=False)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
