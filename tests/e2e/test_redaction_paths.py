"""Redaction edge cases across record paths: held-back bytes in the RESPONSE direction are
released (masked where a match could be pending) when the backend goes quiet (the connection stays open), and `ktls = off` still lets a
session leave OpenSSL for ztproxy's own record layer."""

import os
import time
import unittest

from harness import curl, curl_args, LocalhostTestCase, recv_up_to, tls_connect




class RedactionPathsTest(LocalhostTestCase):
    def quick(self, backend, *extra):
        return self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", backend.address,
                                 "--cert", self.leaf.cert, "--key", self.leaf.key] + list(extra))

    def test_response_tail_is_released_when_the_backend_goes_quiet(self):
        for path in ("userspace", "openssl"):
            with self.subTest(record_path=path):
                echo = self.start_backend("echo")
                proxy = self.quick(echo, "--record-path", path, "--redact-response", "SECRET-[0-9]{4}")
                with tls_connect(proxy.port, "localhost", self.ca.cert, timeout=20) as s:
                    whole = b"x SECRET-9999 y\n"
                    s.sendall(whole)
                    self.assertEqual(recv_up_to(s, len(whole)), b"x *********** y\n", proxy.diag())
                    # "SECRET-12" could still become a match: held back, then sent masked once the
                    # backend has nothing more to say (on_pause = "mask"), connection still open.
                    partial = b"abc SECRET-12"
                    t0 = time.monotonic()
                    s.sendall(partial)
                    got = recv_up_to(s, len(partial))
                    self.assertEqual(got, b"abc *********", "after %.1fs: %r\n%s"
                                     % (time.monotonic() - t0, got, proxy.diag()))
                    s.unwrap()

    def test_ktls_off_still_uses_the_userspace_record_layer(self):
        http = self.start_backend("http")
        proxy = self.quick(http, "--ktls", "off", "--record-path", "userspace")
        r = curl(curl_args("localhost", proxy.port, "/", self.ca.cert))
        self.assertEqual(r.returncode, 0, "%s\n%s" % (r.stderr, proxy.diag()))
        [e] = proxy.wait_access()
        self.assertEqual((e["rx_path"], e["tx_path"]), ("userspace", "userspace"), e)
        self.assertNotIn("ktls_fallback", e)


if __name__ == "__main__":
    unittest.main()
