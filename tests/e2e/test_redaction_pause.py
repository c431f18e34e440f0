"""ztproxy end to end, redaction across a pause (route key on_pause, quick mode --redact-on-pause).

A client sends a card number as two TLS records 200 ms apart: longer than the route's pause
(20 ms), so the proxy sees its input go quiet with the first half held back. An echo backend
returns exactly what it received, so the client reads what the backend saw.
  1. on_pause = "mask" (the default): the first half reaches the backend at the pause, masked; the
     second half follows masked: the card arrives masked whole, and the pause is counted in
     ztproxy_redaction_pause_masks_total.
  2. on_pause = "hold": nothing of the card is released before the second record; it arrives
     masked whole.
  3. on_pause = "mask": a request ending in bytes that could begin a card ("amount=41111111", as in
     a body sized by Content-Length) is answered, its tail masked: never stalled.
On the userspace and OpenSSL record paths (the kernel path: tests/ktls/test_ktls_redaction.py).
The 200 ms sleep is the scenario under test (a pause), never synchronisation: every wait for
data is a bounded read.
"""

import time
import unittest

from harness import LocalhostTestCase, metric, recv_up_to, scrape, tls_connect

CARD_RULE = r"\b(?:\d[ -]?){13,16}\b"
PATHS = ("userspace", "openssl")
PAUSE_SECONDS = 0.2


class RedactionPauseTest(LocalhostTestCase):
    def quick(self, path, *extra):
        echo = self.start_backend("echo")
        return self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", echo.address,
                                 "--cert", self.leaf.cert, "--key", self.leaf.key, "--record-path", path,
                                 "--admin", "127.0.0.1:0", "--redact-request", CARD_RULE] + list(extra))

    def pause_masks(self, proxy):
        status, body = scrape(proxy.admin_address())
        self.assertEqual(status, 200, body)
        return metric(body, "ztproxy_redaction_pause_masks_total", direction="request", rule="request-1")

    def test_card_split_by_a_pause_is_masked_whole_by_default(self):
        for path in PATHS:
            with self.subTest(record_path=path):
                proxy = self.quick(path)
                with tls_connect(proxy.port, "localhost", self.ca.cert, timeout=20) as s:
                    s.settimeout(15)
                    s.sendall(b"card=4111 1111 ")
                    # Released at the pause, masked: the backend never sees these digits.
                    got = recv_up_to(s, 15)
                    self.assertEqual(got, b"card=" + b"*" * 10, proxy.diag())
                    time.sleep(PAUSE_SECONDS)
                    s.sendall(b"1111 1111&x=1\n")
                    rest = recv_up_to(s, 14)
                    self.assertEqual(rest, b"*" * 9 + b"&x=1\n", proxy.diag())
                    s.unwrap()
                self.assertEqual(self.pause_masks(proxy), 1.0)

    def test_card_split_by_a_pause_is_held_whole_in_hold_mode(self):
        for path in PATHS:
            with self.subTest(record_path=path):
                proxy = self.quick(path, "--redact-on-pause", "hold")
                with tls_connect(proxy.port, "localhost", self.ca.cert, timeout=20) as s:
                    s.settimeout(15)
                    s.sendall(b"card=4111 1111 ")
                    # What no match could cover is released at the pause; the card's start waits.
                    self.assertEqual(recv_up_to(s, 5), b"card=", proxy.diag())
                    time.sleep(PAUSE_SECONDS)
                    s.sendall(b"1111 1111&x=1\n")
                    rest = recv_up_to(s, 24)
                    self.assertEqual(rest, b"*" * 19 + b"&x=1\n", proxy.diag())
                    s.unwrap()
                self.assertEqual(self.pause_masks(proxy), 0.0)

    def test_request_ending_in_a_possible_match_is_not_stalled(self):
        for path in PATHS:
            with self.subTest(record_path=path):
                proxy = self.quick(path)
                with tls_connect(proxy.port, "localhost", self.ca.cert, timeout=20) as s:
                    s.settimeout(15)
                    body = b"amount=41111111"
                    s.sendall(b"POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                    head = b"POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n"
                    got = recv_up_to(s, len(head) + len(body))
                    self.assertEqual(got, head + b"amount=********", proxy.diag())
                    s.unwrap()


if __name__ == "__main__":
    unittest.main()
