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


class FloodTest(LocalhostTestCase):
    def flood(self, extra):
        seconds = env_float("ZTP_HOSTILE_FLOOD_SECONDS", 20)
        limit_kib = env_int("ZTP_HOSTILE_FLOOD_LIMIT_MIB", 64) * 1024
        stall = self.start_backend("stall")
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", stall.address,
                                  "--cert", self.leaf.cert, "--key", self.leaf.key] + extra)
        # The baseline: after one complete connection, so that per-worker pools that are created on
        # first use are not counted as the flood's.
        warm = PeerRun(proxy.port, ["send:warm-up", "close-notify"], cafile=self.ca.cert)
        [w] = warm.results()
        self.assertTrue(w["ok"], warm.describe())
        stall.wait_event(r"^STALL_ACCEPTED")
        base = rss_kib(proxy.pid)
        run = PeerRun(proxy.port, ["flood:1:%g" % seconds, "wait-stdin"], cafile=self.ca.cert,
                      options=["--timeout", str(int(seconds) + 30)])
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.25):
                peak[0] = max(peak[0], rss_kib(proxy.pid))

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            [done] = run.wait_event("flood_done", timeout=seconds + 60)
            peak[0] = max(peak[0], rss_kib(proxy.pid))
        finally:
            stop.set()
            t.join(5)
        # Still connected when measured: nothing was freed by a close.
        self.assertTrue(proxy.alive(), proxy.diag())
        [res] = run.results()
        growth = peak[0] - base
        where = "%s path, %s: RSS %d KiB -> peak %d KiB (+%d KiB) after %d one-byte records (%s)\n%s" % (
            RECORD_PATH, "rule route" if extra else "plain route", base, peak[0], growth, done["records"],
            "the proxy stopped reading" if done["blocked_at_end"] else "the proxy kept reading", run.describe())
        sys.stderr.write(where.split("\n")[0] + "\n")
        self.assertTrue(res["ok"], where)
        self.assertLess(growth, limit_kib, "proxy memory grew over the bound: " + where)

    def test_plain_route(self):
        self.flood([])

    def test_rule_route(self):
        self.flood(["--redact-request", RULE])


if __name__ == "__main__":
    sys.exit(main(__name__))
