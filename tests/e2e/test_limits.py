"""Abuse and limits with the real binary: slowloris (1,000 connections that send half a
ClientHello and stall) closed at the handshake timeout while a normal client is served; the
process-wide and per-source connection limits refuse the excess, count it, and recover."""

import os
import resource
import socket
import time
import unittest

from harness import curl, curl_args, LocalhostTestCase, metric, scrape

# A TLS handshake record header announcing 512 bytes, and the start of a ClientHello: OpenSSL
# waits for the rest, which never comes.
HALF_CLIENT_HELLO = b"\x16\x03\x01\x02\x00" + b"\x01\x00\x01\xfc\x03\x03" + os.urandom(90)


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise unittest.SkipTest("the fd limit (%d) is below the %d this test needs" % (hard, need))
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def closed_by_peer(sock, timeout):
    """True once the proxy closed `sock` (EOF or reset) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def stalled(port, source="127.0.0.1", payload=HALF_CLIENT_HELLO):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    if payload:
        s.sendall(payload)
    return s


class LimitsTest(LocalhostTestCase):
    def start(self, *extra):
        return self.start_quick_admin(self.leaf, *extra)

    def assert_curl_ok(self, proxy, what, source=None):
        args = curl_args("localhost", proxy.port, "/bytes/100", self.ca.cert) + ["-o", os.devnull,
                                                                                "--max-time", "10"]
        if source:
            args += ["--interface", source]
        r = curl(args)
        self.assertEqual(r.returncode, 0, "%s: %s\n%s" % (what, r.stderr, proxy.diag()))

    def test_slowloris_half_client_hellos_are_closed_at_the_handshake_timeout(self):
        n = 1000
        raise_fd_limit(n + 256)
        proxy, admin = self.start("--handshake-timeout", "3s")
        t0 = time.monotonic()
        socks = []
        try:
            for _ in range(n):
                socks.append(stalled(proxy.port))
            # While they stall, a normal client gets through.
            self.assert_curl_ok(proxy, "a normal client among %d stalled ones" % n)
            # Not before the timeout...
            early = [s for s in socks[:20] if closed_by_peer(s, 0.01)]
            self.assertEqual(early, [], "stalled handshakes closed before the timeout")
            # ...and every one of them at it (the tick is 250 ms; allow generous scheduling slack).
            deadline = t0 + 3 + 30
            still_open = [s for s in socks if not closed_by_peer(s, max(0.1, deadline - time.monotonic()))]
            self.assertEqual(len(still_open), 0, "%d of %d stalled connections left open\n%s"
                             % (len(still_open), n, proxy.diag()))
        finally:
            for s in socks:
                s.close()
        proxy.wait_access(lambda e: e["close"] == "handshake_timeout", count=n, timeout=60)
        status, text = scrape(admin)
        self.assertEqual(metric(text, "ztproxy_handshakes_total", result="timeout"), n)
        self.assertEqual(metric(text, "ztproxy_connections_closed_total", reason="handshake_timeout"), n)
        self.assertEqual(metric(text, "ztproxy_connections_active"), 0)
        self.assert_curl_ok(proxy, "after the slowloris wave")

    def test_max_connections_refuses_the_excess_and_recovers(self):
        proxy, admin = self.start("--max-connections", "20", "--handshake-timeout", "60s")
        held = [stalled(proxy.port, payload=b"") for _ in range(20)]
        try:
            proxy_active = lambda: metric(scrape(admin)[1], "ztproxy_connections_active")
            deadline = time.monotonic() + 20
            while proxy_active() < 20:
                self.assertLess(time.monotonic(), deadline, "the 20 connections were not all accepted")
                time.sleep(0.05)
            extra = [stalled(proxy.port, payload=b"") for _ in range(5)]
            for s in extra:
                self.assertTrue(closed_by_peer(s, 10), "a connection over max_connections was kept")
                s.close()
            text = scrape(admin)[1]
            self.assertEqual(metric(text, "ztproxy_connections_refused_total", reason="max_connections"), 5)
            self.assertTrue(proxy.err.wait_for(lambda l: "connection limit 20 reached" in l, 10),
                            "the refusal is not logged")
        finally:
            for s in held:
                s.close()
        # Recovery: the held connections end, new ones are served again.
        self.assert_curl_ok(proxy, "after the limit")

    def test_max_map_count_warning_names_the_maps_needed(self):
        # Eight workers with 2,048 connections each need more gated-pool maps than the kernel's
        # default vm.max_map_count (proxy/conn/worker.cpp): warned at start with the number to set,
        # and the proxy still serves. One worker fits, and says nothing.
        with open("/proc/sys/vm/max_map_count") as f:
            have = int(f.read())
        proxy, _ = self.start("--workers", "8", "--max-connections", "2048")
        m = proxy.wait_line("stderr", r"vm\.max_map_count is (\d+), .* (\d+) memory maps: "
                                      r"raise it \(sysctl vm\.max_map_count=(\d+)\)")
        self.assertEqual(int(m.group(1)), have)
        self.assertGreater(int(m.group(2)), have)
        self.assertEqual(m.group(2), m.group(3))
        self.assert_curl_ok(proxy, "with the warning")
        quiet, _ = self.start("--workers", "1", "--max-connections", "64")
        self.assert_curl_ok(quiet, "one worker")
        self.assertFalse([l for l in quiet.err.snapshot() if "max_map_count" in l], quiet.diag())

    def test_relay_memory_bound_is_stated_and_warned_with_the_max_connections_that_fits(self):
        # proxy/conn/relay_memory.hpp: the per-connection bound of the costliest route (here the
        # userspace path's record batch: 16 records of 16,413 bytes, plus two plan queues of 1024
        # segments of 64 bytes) times max_connections, plus the gated pools. A million connections
        # cannot fit this machine: warned with the number that does; the proxy still serves.
        per_connection = 16 * 16413 + 2 * 1024 * 64
        proxy, _ = self.start("--max-connections", "1000000")
        m = proxy.wait_line("stderr", r"relay memory: at most (\d+) KiB per connection \(([^)]*)\), (\d+) MiB "
                                      r"at max_connections 1000000")
        self.assertEqual((int(m.group(1)), m.group(2)),
                         (-(-per_connection // 1024), "route without rules, userspace path"))
        w = proxy.wait_line("stderr", r"relay memory may reach (\d+) MiB .* plus (\d+) MiB of gated pools\), above "
                                      r"this process's memory limit of (\d+) MiB: set limits.max_connections to "
                                      r"at most (\d+) ")
        reach, pools, limit, fits = (int(g) for g in w.groups())
        self.assertEqual(reach, int(m.group(3)))
        self.assertAlmostEqual(fits, (limit - pools) * 2**20 // per_connection, delta=3)
        self.assert_curl_ok(proxy, "with the warning")
        quiet, _ = self.start("--max-connections", "64")
        self.assert_curl_ok(quiet, "64 connections")
        self.assertFalse([l for l in quiet.err.snapshot() if "relay memory may reach" in l], quiet.diag())

    def test_per_source_limit_refuses_one_address_not_the_others(self):
        proxy, admin = self.start("--max-connections-per-source", "4", "--handshake-timeout", "60s")
        held = [stalled(proxy.port, source="127.0.0.2", payload=b"") for _ in range(4)]
        try:
            extra = stalled(proxy.port, source="127.0.0.2", payload=b"")
            self.assertTrue(closed_by_peer(extra, 10), "a fifth connection from one address was kept")
            extra.close()
            # Another address is unaffected.
            self.assert_curl_ok(proxy, "another source address", source="127.0.0.3")
            text = scrape(admin)[1]
            self.assertEqual(metric(text, "ztproxy_connections_refused_total",
                                    reason="max_connections_per_source"), 1)
        finally:
            for s in held:
                s.close()
        # Recovery: once its connections end, the address is served again.
        deadline = time.monotonic() + 20
        while metric(scrape(admin)[1], "ztproxy_connections_active") > 0:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.assert_curl_ok(proxy, "the limited address after its connections ended", source="127.0.0.2")


if __name__ == "__main__":
    unittest.main()
