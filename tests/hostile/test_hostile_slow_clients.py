#!/usr/bin/env python3
"""Slow clients on a rule route (issue 12, case 3: pool starvation).

ZTP_HOSTILE_SLOW_CLIENTS (150) clients each type a bearer token one byte per record every 10 ms
for ZTP_HOSTILE_SLOW_SECONDS, so every one holds a redaction match open, while fresh clients
come and are served. None of them may be closed: each gets its whole (masked) echo back and a
close_notify after its own, the access log has no `overloaded`, and neither has the counter.
"""

import sys
import threading

from hostile import RECORD_PATH, PeerRun, env_float, env_int, main
from harness import LocalhostTestCase, metric, scrape, tls_connect

RULE = r"Bearer [A-Za-z0-9._~+/=-]{1,128}"


class SlowClientsTest(LocalhostTestCase):
    def test_typing_clients_hold_matches_open_while_fresh_clients_are_served(self):
        clients = env_int("ZTP_HOSTILE_SLOW_CLIENTS", 150)
        seconds = env_float("ZTP_HOSTILE_SLOW_SECONDS", 4)
        echo = self.start_backend("echo")
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", echo.address,
                                  "--cert", self.leaf.cert, "--key", self.leaf.key,
                                  "--redact-request", RULE, "--admin", "127.0.0.1:0",
                                  # 150 handshakes at once take more than the default 10 s
                                  # inside the kTLS kernel (UML); slow handshakes are not the point.
                                  "--handshake-timeout", "60s"])
        admin = proxy.admin_address()
        run = PeerRun(proxy.port, ["send:Authorization: Bearer ", "mark:typing", "type-for:10:%g" % seconds,
                                   "send:\\r\\n", "expect-echo", "close-notify", "read-close"],
                      cafile=self.ca.cert, options=["--connections", str(clients), "--timeout", "60"])
        try:
            # Every slow client is connected and typing: now the fresh ones.
            run.wait_event("mark", count=clients, timeout=120)
            fresh_errors = []

            def fresh(i):
                try:
                    with tls_connect(proxy.port, "localhost", self.ca.cert, timeout=30) as s:
                        msg = b"fresh client %d\n" % i
                        s.sendall(msg)
                        got = b""
                        while len(got) < len(msg):
                            d = s.recv(len(msg) - len(got))
                            if not d:
                                break
                            got += d
                        if got != msg:
                            fresh_errors.append("fresh %d got %r" % (i, got))
                except OSError as e:
                    fresh_errors.append("fresh %d: %s" % (i, e))

            threads = [threading.Thread(target=fresh, args=(i,)) for i in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            results = run.results(timeout=180)
        finally:
            run.kill()
        entries = proxy.wait_access(count=clients + 20, timeout=60)
        reasons = {}
        for e in entries:
            reasons[e["close"]] = reasons.get(e["close"], 0) + 1
        errors = {}
        for r in results:
            if not r["ok"] or r["close"] != "close_notify":
                key = (r["error"] or "").split(":")[0] + " / " + r["close"]
                errors[key] = errors.get(key, 0) + 1
        where = "%s path, %d slow clients typing %gs; access log close reasons %r; client failures %r\n%s" % (
            RECORD_PATH, clients, seconds, reasons, errors, run.describe())
        self.assertEqual(fresh_errors, [], where)
        self.assertEqual(len(results), clients, where)
        self.assertEqual(errors, {}, "slow clients were cut off: " + where)
        self.assertNotIn("overloaded", reasons, where)
        _, text = scrape(admin)
        self.assertEqual(metric(text, "ztproxy_connections_closed_total", reason="overloaded"), 0, text)


if __name__ == "__main__":
    sys.exit(main(__name__))
