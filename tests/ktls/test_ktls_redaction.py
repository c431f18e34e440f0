#!/usr/bin/env python3
"""kTLS end to end, redaction: a route with rules on the kernel record path (kTLS RX/TX) takes the
rewrite relay and masks exactly, while a rule-free route of the same proxy is still spliced.

Per connection, from the proxy's access log, the backend's own account and /proc/net/tls_stat:
  1. A rule-free route: byte-exact (cards and all), rx_path=kernel tx_path=kernel,
     spliced_* == bytes_*, copied_* == 0.
  2. A request-rule route (mask `4111[ 0-9]{12,15}`), TLS 1.3 and 1.2: a raw TLS stream with card
     numbers planted across record edges (writes of many sizes) and TCP segment edges arrives with
     exactly the expected masks (length + sha256 against the local reference of
     tests/e2e/test_redaction.py); rx_path=kernel, spliced_up == spliced_down == 0, and the
     kernel's TlsRxSw/TlsTxSw grew (the record crypto stayed in the kernel).
  3. A response-rule route: GET /secret comes back masked, tx_path=kernel, not spliced.
  4. A length-changing replacement ("[REDACTED]", allow_length_change) on the kernel path: one
     match in one write, then adjacent and overlapping matches over many small writes.
  5. A 20-byte request whose tail could begin a match comes back from an echo backend within
     bounded time (held bytes are sent masked when the input pauses), on the kernel path; a card
     sent as two records 200 ms apart is masked whole (on_pause = "mask", the first half at the
     pause) and held whole (on_pause = "hold").
  6. On the rewrite relay too, a tampered client record (close=bad_record) and a client KeyUpdate
     the kernel cannot follow (close=key_update_unsupported) bump the same dedicated counters as
     on the splice relay (ztproxy_bad_records_total, ztproxy_ktls_key_update_closes_total).

Exit 77 (CTest skip) on a kernel without kTLS outside the VM; inside the VM (KTLS_VM_GUEST set) a
missing kTLS is a failure. Run by hand inside the VM:
  tests/ktls/run-in-ktls-kernel.sh bash -c 'cd tests/ktls && ZTPROXY_BIN=$PWD/../../build/ztproxy \
      python3 test_ktls_redaction.py'
Connections are strictly sequential (each one's access line and backend event are awaited before
the next), so "the next access line" and tls_stat deltas belong to the connection just made.
"""

import os
import ssl
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, HERE)

import backend as backend_mod  # noqa: E402
import test_redaction as red  # noqa: E402
from harness import (E2ETestCase, Backend, CertAuthority, HttpConn, Proxy,  # noqa: E402
                     SClientSession, metric, recv_up_to, scrape, tls_close_kind, tls_connect,
                     wait_until)
from test_ktls_e2e import (CURR, TLS13, TamperForwarder, as_int, kernel_can_rekey,  # noqa: E402
                           main, require_ktls, stat_delta, tls_stat)

MIB = 1024 * 1024
COUNTERS = ("bytes_up", "bytes_down", "spliced_up", "spliced_down", "copied_up", "copied_down")

ROUTES = [
    ("raw.test", "record", [], False),
    ("mask.test", "record", [red.R_CARD_MASK], False),
    ("resp.test", "http", [red.R_CARD_RESP, red.R_TOKEN_RESP], False),
    ("echo.test", "echo", [red.R_CARD_MASK], False),
    ("len.test", "record", [red.R_CARD_REDACT], True),
    ("holdecho.test", "echo", [red.R_CARD_MASK], False),  # on_pause = "hold" (red.HOLD_ROUTES)
]
RULES = [red.R_CARD_MASK, red.R_CARD_RESP, red.R_TOKEN_RESP, red.R_CARD_REDACT]


class KtlsRedactionTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        require_ktls()
        super().setUpClass()
        cls.ca = CertAuthority(os.path.join(cls.class_tmp, "pki"))
        cls.leaf = cls.ca.issue("leaf", "ec", dns=[r[0] for r in ROUTES] + ["localhost"])
        cls.echo = Backend("echo")
        cls.addClassCleanup(cls.echo.stop)
        cls.http = Backend("http")
        cls.addClassCleanup(cls.http.stop)
        rec_dir = os.path.join(cls.class_tmp, "rec")
        os.makedirs(rec_dir)
        cls.record = red.RecordBackend(rec_dir)
        cls.addClassCleanup(cls.record.stop)
        policy = os.path.join(cls.class_tmp, "policy.toml")
        with open(policy, "w") as f:
            f.write(red.redaction_policy(cls.leaf, {"http": cls.http.address,
                                                    "record": cls.record.address,
                                                    "echo": cls.echo.address},
                                         routes=ROUTES, rules=RULES,
                                         sections={"limits": {"idle_timeout": "60s"},
                                                   "admin": {"address": "127.0.0.1:0"}}))
        cls.proxy = Proxy(["run", "-c", policy])
        cls.addClassCleanup(cls.proxy.stop)
        cls.port = cls.proxy.port
        cls.admin = cls.proxy.admin_address()

    def setUp(self):
        super().setUp()
        self.assertTrue(self.proxy.alive(), "the class proxy died earlier\n" + self.proxy.diag())
        self.curr_before = {k: v for k, v in tls_stat().items() if k in CURR}

    def tearDown(self):
        try:
            self.assertTrue(self.proxy.alive(), "ztproxy died during the test\n" + self.proxy.diag())
            wait_until(lambda: {k: v for k, v in tls_stat().items() if k in CURR}
                       == self.curr_before, 15, "the proxy's kTLS sockets to be closed (%s before)"
                       % self.curr_before)
        finally:
            super().tearDown()

    # ------------------------------------------------------------------ helpers

    def mark(self):
        return len(self.proxy.access_entries())

    def next_access(self, mark, what, timeout=60):
        entries = self.proxy.wait_access(count=mark + 1, timeout=timeout, what=what)
        self.assertEqual(len(entries), mark + 1, "more than one new access entry %s:\n%s"
                         % (what, "\n".join(map(repr, entries[mark:]))))
        return entries[mark]

    def counters(self, e):
        return {k: as_int(e, k) for k in COUNTERS}

    def assert_ktls_counted(self, before, what):
        d = stat_delta(before, tls_stat())
        self.assertGreaterEqual((d["TlsRxSw"], d["TlsTxSw"]), (1, 1),
                                "%s: the kernel did not count a kTLS socket: %r" % (what, d))

    def stream(self, sni, total, seed, version):
        data, sizes, planted = red.planted_stream(total, seed)
        ctx = red.client_context(self.ca.cert, minimum=version, maximum=version)
        c = red.BioTlsClient(self.port, sni, ctx, timeout=120)
        try:
            red.send_planned(c, data, sizes, seed)
            c.half_close()
            reply, how = c.read_until_close()
        finally:
            c.close()
        return data, planted, reply, how

    # ------------------------------------------------------------------ 1

    def test_rule_free_route_is_spliced_and_byte_exact(self):
        total = 2 * MIB
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            with self.subTest(version=version.name):
                what = "rule-free route %s" % version.name
                mark, rmark = self.mark(), self.record.mark()
                before = tls_stat()
                data, planted, reply, how = self.stream("raw.test", total, 7, version)
                n, digest, path, reason = self.record.closed(rmark)
                os.unlink(path)
                self.assertEqual((n, digest, reason), (total, red.sha(data), "eof"),
                                 "%s: the backend did not get the bytes unchanged" % what)
                self.assertEqual((reply, how), (b"RECORDED %d %s\n" % (total, digest.encode()),
                                                "close_notify"), self.proxy.diag())
                e = self.next_access(mark, "for the " + what)
                msg = "%s: %r" % (what, e)
                c = self.counters(e)
                self.assertEqual((e.get("rx_path"), e.get("tx_path")), ("kernel", "kernel"), msg)
                self.assertEqual((c["spliced_up"], c["spliced_down"]),
                                 (c["bytes_up"], c["bytes_down"]), msg)
                self.assertEqual((c["copied_up"], c["copied_down"]), (0, 0), msg)
                self.assertEqual((c["bytes_up"], e.get("close")), (total, "client_close"), msg)
                self.assert_ktls_counted(before, what)

    # ------------------------------------------------------------------ 2

    def test_redaction_route_on_kernel_path_masks_and_is_not_spliced(self):
        total = 4 * MIB
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            with self.subTest(version=version.name):
                what = "redaction route %s" % version.name
                mark, rmark = self.mark(), self.record.mark()
                before = tls_stat()
                data, planted, reply, how = self.stream("mask.test", total, 11, version)
                expected, nspans = red.apply_card_big(data)
                self.assertGreaterEqual(nspans, planted)
                n, digest, path, reason = self.record.closed(rmark)
                if (n, digest) != (len(expected), red.sha(expected)):
                    with open(path, "rb") as f:
                        got = f.read()
                    self.fail(red.describe_difference(got, expected, what) + "\n"
                              + self.proxy.diag())
                os.unlink(path)
                self.assertEqual((reply, how, reason),
                                 (b"RECORDED %d %s\n" % (total, digest.encode()), "close_notify",
                                  "eof"), self.proxy.diag())
                e = self.next_access(mark, "for the " + what)
                msg = "%s: %r" % (what, e)
                c = self.counters(e)
                self.assertEqual((e.get("rx_path"), e.get("tx_path")), ("kernel", "kernel"), msg)
                self.assertNotIn("ktls_fallback", e, msg)
                self.assertEqual((c["spliced_up"], c["spliced_down"]), (0, 0), msg)
                self.assertEqual((c["bytes_up"], e.get("close")), (total, "client_close"), msg)
                self.assert_ktls_counted(before, what)

    # ------------------------------------------------------------------ 3

    def test_response_rule_on_kernel_path(self):
        want = red.apply_rules(backend_mod.SECRET_BODY, [red.R_CARD_RESP, red.R_TOKEN_RESP],
                               "response")
        self.assertNotIn(b"4111", want)
        mark = self.mark()
        before = tls_stat()
        with tls_connect(self.port, "resp.test", self.ca.cert, timeout=30) as s:
            conn = HttpConn(s)
            conn.request("GET", "/secret", "resp.test", headers={"Connection": "close"})
            r = conn.response()
        self.assertEqual((r.status, r.body), (200, want), self.proxy.diag())
        e = self.next_access(mark, "for GET /secret on resp.test")
        msg = repr(e)
        self.assertEqual((e.get("rx_path"), e.get("tx_path")), ("kernel", "kernel"), msg)
        self.assertEqual((as_int(e, "spliced_up"), as_int(e, "spliced_down")), (0, 0), msg)
        self.assert_ktls_counted(before, "response rule")

    # ------------------------------------------------------------------ 4

    def test_length_changing_replacement_on_kernel_path(self):
        multi = b"".join([b"start ", red.CARD, b" middle ", red.CARD + red.CARD, b" sep ",
                          b"4111 4111 1111 1111 1111", b" near 4111 1111 111x miss end\n"]) * 20
        cases = [("one match", b"before 4111 1111 1111 1111 after\n", None),
                 ("adjacent and overlapping matches", multi, [7, 1, 40, 333, 2, 1000, 5])]
        for what, data, pool in cases:
            with self.subTest(case=what):
                sizes, off, i = [], 0, 0
                while off < len(data):
                    n = len(data) - off if pool is None else min(pool[i % len(pool)],
                                                                  len(data) - off)
                    sizes.append(n)
                    off += n
                    i += 1
                expected = red.apply_rules(data, [red.R_CARD_REDACT], "request")
                mark, rmark = self.mark(), self.record.mark()
                before = tls_stat()
                ctx = red.client_context(self.ca.cert)
                c = red.BioTlsClient(self.port, "len.test", ctx, timeout=60)
                try:
                    red.send_planned(c, data, sizes, 5)
                    c.half_close()
                    reply, how = c.read_until_close()
                finally:
                    c.close()
                n, digest, path, reason = self.record.closed(rmark)
                with open(path, "rb") as f:
                    got = f.read()
                os.unlink(path)
                self.assertEqual(got, expected, red.describe_difference(got, expected, what)
                                 + "\n" + self.proxy.diag())
                self.assertEqual((reply, how), (b"RECORDED %d %s\n" % (
                    len(expected), red.sha(expected).encode()), "close_notify"))
                e = self.next_access(mark, "for the " + what)
                msg = "%s: %r" % (what, e)
                self.assertEqual((e.get("rx_path"), e.get("tx_path")), ("kernel", "kernel"), msg)
                self.assertEqual((as_int(e, "spliced_up"), as_int(e, "spliced_down")), (0, 0),
                                 msg)
                self.assert_ktls_counted(before, what)

    # ------------------------------------------------------------------ 5

    def test_small_request_is_flushed_on_kernel_path(self):
        head = b"hello, world!!! 4111"  # 20 bytes; the tail could begin a card number
        mark = self.mark()
        with tls_connect(self.port, "echo.test", self.ca.cert, timeout=30) as s:
            s.settimeout(15)
            s.sendall(head)
            got = recv_up_to(s, len(head))
            # on_pause = "mask" (the default): the held "4111" could begin a card: sent masked.
            self.assertEqual(got, head[:-4] + b"****", "held bytes never flushed\n" + self.proxy.diag())
            s.unwrap()
        e = self.next_access(mark, "for the small request")
        self.assertEqual((e.get("rx_path"), as_int(e, "spliced_up")), ("kernel", 0), repr(e))

    def test_card_split_by_a_pause_on_kernel_path(self):
        """A card sent as two TLS records 200 ms apart (the sleep is the pause under test): masked
        whole, the first half at the pause (on_pause = "mask"); held whole with "hold"."""
        cases = (("echo.test", b"card=" + b"*" * 10, b"*" * 9 + b"&x=1\n"),
                 ("holdecho.test", b"card=", b"*" * 19 + b"&x=1\n"))
        for name, at_pause, after in cases:
            with self.subTest(route=name):
                mark = self.mark()
                with tls_connect(self.port, name, self.ca.cert, timeout=30) as s:
                    s.settimeout(15)
                    s.sendall(b"card=4111 1111 ")
                    self.assertEqual(recv_up_to(s, len(at_pause)), at_pause, self.proxy.diag())
                    time.sleep(0.2)
                    s.sendall(b"1111 1111&x=1\n")
                    self.assertEqual(recv_up_to(s, len(after)), after, self.proxy.diag())
                    s.unwrap()
                e = self.next_access(mark, "for the card split by a pause")
                self.assertEqual((e.get("rx_path"), as_int(e, "spliced_up")), ("kernel", 0), repr(e))

    # ------------------------------------------------------------------ 6

    def counted(self):
        status, text = scrape(self.admin)
        self.assertEqual(status, 200)
        names = ("ztproxy_bad_records_total", "ztproxy_ktls_key_update_closes_total",
                 "ztproxy_key_updates_total")
        return {n: metric(text, n) for n in names}

    def test_rewrite_route_counts_bad_records_and_key_updates(self):
        # echo.test has a rule: the rewrite relay reads the client through the kernel record path.
        before = self.counted()
        mark = self.mark()
        fwd = TamperForwarder(self.port, "body", 1)  # TLS 1.3: 0x17 record 0 is the Finished
        s = tls_connect(fwd.port, "echo.test", self.ca.cert, timeout=30,
                        minimum=ssl.TLSVersion.TLSv1_3, maximum=ssl.TLSVersion.TLSv1_3)
        with s:
            try:
                s.sendall(b"A" * 1000 + b"\n")
            except OSError:
                pass  # the proxy may already have closed: that is the point
            kind, n = tls_close_kind(s, 20)
        fwd.join(10)
        self.assertIsNotNone(fwd.tampered, "the record to tamper never came: %r" % fwd.errors)
        self.assertEqual(n, 0, "plaintext came back after a tampered record (%s)" % kind)
        e = self.next_access(mark, "for the tampered record")
        self.assertEqual((e.get("close"), e.get("rx_path"), as_int(e, "bytes_up")),
                         ("bad_record", "kernel", 0), repr(e))
        after = self.counted()
        self.assertEqual(after["ztproxy_bad_records_total"]
                         - before["ztproxy_bad_records_total"], 1, repr(e))

        # A client KeyUpdate ("k": not requested), then a line under the client's next key.
        rekeys = kernel_can_rekey()
        mark = self.mark()
        sc = SClientSession(self.port, "echo.test", self.ca.cert,
                            ["-tls1_3", "-ciphersuites", TLS13["AES-128-GCM"]])
        try:
            self.assertTrue(sc.write(b"hello\n"), sc.describe())
            self.assertTrue(sc.wait(lambda o, _: len(o) >= 6, 30), "no echo\n" + sc.describe())
            self.assertTrue(sc.write(b"k\n"), sc.describe())
            self.assertTrue(sc.wait(lambda _, err: b"KEYUPDATE" in err, 30), sc.describe())
            sc.write(b"after\n")
            if rekeys:
                self.assertTrue(sc.wait(lambda o, _: len(o) >= 12, 30), sc.describe())
            else:
                self.assertIsNotNone(sc.wait_exit(20), "the proxy left the connection open\n"
                                     + sc.describe() + "\n" + self.proxy.diag())
        finally:
            sc.close()
        e = self.next_access(mark, "for the KeyUpdate on the rewrite route")
        later = self.counted()
        closes = (later["ztproxy_ktls_key_update_closes_total"]
                  - after["ztproxy_ktls_key_update_closes_total"])
        followed = later["ztproxy_key_updates_total"] - after["ztproxy_key_updates_total"]
        self.assertEqual(e.get("rx_path"), "kernel", repr(e))
        if rekeys:
            self.assertEqual((bytes(sc.out), closes, followed), (b"hello\nafter\n", 0, 1), repr(e))
        else:
            self.assertEqual((bytes(sc.out), e.get("close"), as_int(e, "bytes_up"), closes,
                              followed), (b"hello\n", "key_update_unsupported", 6, 1, 0), repr(e))


if __name__ == "__main__":
    sys.exit(main(__name__))
