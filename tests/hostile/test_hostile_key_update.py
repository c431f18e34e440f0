#!/usr/bin/env python3
"""KeyUpdate under load, real sockets (issue 12, case 1: records overwritten while on the wire).

Many TLS 1.3 connections download the e2e backend's pattern through the proxy. Each reader is
slow: a 16 KiB receive buffer, reads of random size, random pauses; and it sends
KeyUpdate(update_requested) at a random point of every answer, while the proxy streams backend
data to it, with the next request pipelined right behind it and a random stop of reading after. Every byte is checked against the pattern; the proxy must answer every requested
update with its own KeyUpdate (RFC 8446 §4.6.3) and count every update it followed.

On a kernel path that cannot rekey kTLS (Linux < 6.14) a KeyUpdate closes the connection instead:
there each connection downloads one checked answer, sends KeyUpdate(update_requested) and
nothing else, and the proxy must close cleanly (close_notify or FIN, never a reset) with
close=key_update_unsupported, counted. On a kernel that can (the ktls_vm_suite_rekey kernel), the
load above runs on kTLS, and the kernel's own rekey counters (/proc/net/tls_stat) must agree with
the peer and with ztproxy_key_updates_total: every client KeyUpdate a TlsRxRekeyOk, every one of
ours a TlsTxRekeyOk, no rekey or decrypt errors.

Sizes: ZTP_HOSTILE_KU_CONNECTIONS x ZTP_HOSTILE_KU_MIB MiB in ZTP_HOSTILE_KU_REQUESTS requests
(8 x 32 MiB in 16 by default); the seed is printed (ZTP_HOSTILE_SEED replays it).
"""

import sys

from hostile import KERNEL, RECORD_PATH, env_int, kernel_can_rekey, main, run_peer, seed
from harness import LocalhostTestCase, metric, scrape
from test_ktls_e2e import stat_delta, tls_stat


class KeyUpdateLoadTest(LocalhostTestCase):
    def test_slow_readers_with_random_key_updates_get_every_byte(self):
        conns = env_int("ZTP_HOSTILE_KU_CONNECTIONS", 8)
        requests = env_int("ZTP_HOSTILE_KU_REQUESTS", 16)
        each = env_int("ZTP_HOSTILE_KU_MIB", 32) * 1024 * 1024 // requests
        s = seed()
        backend = self.start_backend("http")
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", backend.address,
                                  "--cert", self.leaf.cert, "--key", self.leaf.key, "--admin", "127.0.0.1:0"])
        admin = proxy.admin_address()
        if KERNEL and not kernel_can_rekey():
            # Below Linux 6.14 kTLS cannot take the next key: the first KeyUpdate ends the
            # connection. After a checked answer, a KeyUpdate(update_requested) and nothing else
            # (so that no byte of ours arrives after the close and draws a reset).
            results, run = run_peer(proxy.port, ["get:/bytes:%d:1" % each, "key-update:requested", "read-close"],
                                    cafile=self.ca.cert,
                                    options=["--connections", str(conns), "--seed", str(s), "--rcvbuf", "16384",
                                             "--read-max", "16384", "--pace-ms", "3", "--timeout", "60"])
            where = "seed %d, %s path\n%s" % (s, RECORD_PATH, run.describe())
            entries = proxy.wait_access(count=conns, timeout=60)
            for r in results:
                self.assertTrue(r["ok"], where)
                self.assertEqual(r["verified_bytes"], each, where)
                self.assertIn(r["close"], ("close_notify", "fin"), "a clean close, not %s: %s" % (r["close"], where))
            for e in entries:
                self.assertEqual(e["close"], "key_update_unsupported", "%r\n%s" % (e, where))
            _, text = scrape(admin)
            self.assertEqual(metric(text, "ztproxy_ktls_key_update_closes_total"), conns, text)
            return
        # kernel-wide counters; the kTLS tests hold the ktls_tls_stat lock, and the peer and the
        # backend use no kTLS, so every rekey counted here is the proxy's.
        stat_before = tls_stat() if KERNEL else None
        results, run = run_peer(proxy.port, ["get:/bytes:%d:%d" % (each, requests), "close-notify", "read-close"],
                                cafile=self.ca.cert,
                                options=["--connections", str(conns), "--seed", str(s), "--rcvbuf", "16384",
                                         "--read-max", "16384", "--pace-ms", "3", "--stall-ms", "50", "--key-updates",
                                         "--timeout", "60"])
        where = "seed %d, %s path\n%s" % (s, RECORD_PATH, run.describe())
        self.assertEqual(len(results), conns, where)
        entries = proxy.wait_access(count=conns, timeout=60)
        _, text = scrape(admin)
        for r in results:
            self.assertTrue(r["ok"], "connection %d failed: %s\n%s" % (r["conn"], r["error"], where))
            self.assertEqual(r["verified_bytes"], each * requests, where)
            # One per answer, unless the last went out < 200 ms before (the proxy allows 8 a second).
            self.assertGreater(r["key_updates_sent"], 0, where)
            # Each update_requested was answered before the proxy's next application data.
            self.assertGreaterEqual(r["key_updates_received"], r["key_updates_sent"], where)
            self.assertEqual(r["close"], "close_notify", where)
        for e in entries:
            self.assertEqual(e["close"], "client_close", "%r\n%s" % (e, where))
        if RECORD_PATH != "openssl":  # there OpenSSL follows them; the counter is the record layers'
            self.assertEqual(metric(text, "ztproxy_key_updates_total"),
                             sum(r["key_updates_sent"] for r in results), text)
        if KERNEL:
            d = stat_delta(stat_before, tls_stat())
            msg = "tls_stat delta %r\n%s" % (d, where)
            self.assertEqual(d["TlsRxRekeyOk"], metric(text, "ztproxy_key_updates_total"), msg)
            self.assertEqual(d["TlsRxRekeyReceived"], d["TlsRxRekeyOk"], msg)
            # Ours: one per update_requested the proxy answered, each seen by the peer.
            self.assertEqual(d["TlsTxRekeyOk"], sum(r["key_updates_received"] for r in results), msg)
            self.assertEqual((d["TlsRxRekeyError"], d["TlsTxRekeyError"], d["TlsDecryptError"]), (0, 0, 0), msg)
            print("kTLS rekeys under load: TlsRxRekeyOk +%d, TlsTxRekeyOk +%d, ztproxy_key_updates_total %d"
                  % (d["TlsRxRekeyOk"], d["TlsTxRekeyOk"], metric(text, "ztproxy_key_updates_total")))


if __name__ == "__main__":
    sys.exit(main(__name__))
