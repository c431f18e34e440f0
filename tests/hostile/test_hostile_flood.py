#!/usr/bin/env python3
"""Tiny-record floods into a stalled backend (issue 12, case 2: memory amplification).

One client sends 1-byte TLS records for ZTP_HOSTILE_FLOOD_SECONDS (20 s) into a backend that
accepted and never reads. A bounded proxy stops reading the client (back-pressure) once its
buffers towards the backend are full; an unbounded one keeps taking records, and each byte pins
a whole chunk or slot. The proxy's RSS (VmRSS) is sampled during the flood: its growth over the
idle proxy must stay under ZTP_HOSTILE_FLOOD_LIMIT_MIB (64 MiB, the README's per-connection
bound) for the one connection. Both relays: a plain route, and a route with a redaction rule
(the rewrite relay), on the record path CTest selects.
"""

import sys
import threading

from hostile import RECORD_PATH, PeerRun, env_float, env_int, main, rss_kib
from harness import LocalhostTestCase

RULE = r"Bearer [A-Za-z0-9._~+/=-]{1,128}"


class Flood:
    """One proxy (plain or rule route) in front of a stalled backend, and one flooding client."""

    def __init__(self, test, route, extra, seconds):
        self.route, self.seconds = route, seconds
        stall = test.start_backend("stall")
        self.proxy = test.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", stall.address,
                                       "--cert", test.leaf.cert, "--key", test.leaf.key] + extra)
        # The baseline: after one complete connection, so that per-worker pools that are created
        # on first use are not counted as the flood's.
        warm = PeerRun(self.proxy.port, ["send:warm-up", "close-notify"], cafile=test.ca.cert)
        [w] = warm.results()
        test.assertTrue(w["ok"], warm.describe())
        self.base = self.peak = rss_kib(self.proxy.pid)
        self.run = PeerRun(self.proxy.port, ["flood:1:%g" % seconds, "wait-stdin"], cafile=test.ca.cert,
                           options=["--timeout", str(int(seconds) + 30)])

    def sample(self):
        self.peak = max(self.peak, rss_kib(self.proxy.pid))

    def finish(self):
        """(the flood_done event, the client's result), measured while still connected."""
        [done] = self.run.wait_event("flood_done", timeout=self.seconds + 60)
        self.sample()
        alive = self.proxy.alive()
        [res] = self.run.results()
        return done, res, alive


class FloodTest(LocalhostTestCase):
    def test_one_byte_records_into_a_stalled_backend_plain_and_rule_route(self):
        # Both relays at once (two proxies, measured apart): half the wall time.
        seconds = env_float("ZTP_HOSTILE_FLOOD_SECONDS", 20)
        limit_kib = env_int("ZTP_HOSTILE_FLOOD_LIMIT_MIB", 64) * 1024
        floods = [Flood(self, "plain route", [], seconds), Flood(self, "rule route", ["--redact-request", RULE], seconds)]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.25):
                for f in floods:
                    f.sample()

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            outcomes = [f.finish() for f in floods]
        finally:
            stop.set()
            t.join(5)
            for f in floods:
                f.run.kill()
        for f, (done, res, alive) in zip(floods, outcomes):
            with self.subTest(route=f.route):
                growth = f.peak - f.base
                where = "%s path, %s: RSS %d KiB -> peak %d KiB (+%d KiB) after %d one-byte records (%s)\n%s" % (
                    RECORD_PATH, f.route, f.base, f.peak, growth, done["records"],
                    "the proxy stopped reading" if done["blocked_at_end"] else "the proxy kept reading",
                    f.run.describe())
                sys.stderr.write(where.split("\n")[0] + "\n")
                self.assertTrue(alive, f.proxy.diag())
                self.assertTrue(res["ok"], where)
                self.assertLess(growth, limit_kib, "proxy memory grew over the bound: " + where)


if __name__ == "__main__":
    sys.exit(main(__name__))
