"""TLS 1.3 KeyUpdate mid-stream on the user-space record paths, driven by openssl s_client's
interactive `k` (update, not requested) and `K` (requested: ztproxy must answer with its own
KeyUpdate before sealing anything under its next key). The connection keeps working both ways.
(On the kernel path of a < 6.14 kernel a KeyUpdate ends the connection instead: tests/ktls.)
"""

import os
import unittest

from harness import FORCED_RECORD_PATH, LocalhostTestCase, SClientSession


class KeyUpdateTest(LocalhostTestCase):
    def test_key_update_both_kinds_mid_stream(self):
        for path in ((FORCED_RECORD_PATH,) if FORCED_RECORD_PATH else ("userspace", "openssl")):
            with self.subTest(record_path=path):
                echo = self.start_backend("echo")
                proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", echo.address,
                                          "--cert", self.leaf.cert, "--key", self.leaf.key,
                                          "--record-path", path])
                sc = SClientSession(proxy.port, "localhost", self.ca.cert, ["-tls1_3"])
                try:
                    expected = b""
                    for i, cmd in enumerate((b"k\n", b"K\n", b"K\n", b"k\n")):
                        line = b"before update %d\n" % i
                        expected += line
                        self.assertTrue(sc.write(line), sc.describe())
                        self.assertTrue(sc.wait(lambda o, _: bytes(o) == expected, 30),
                                        "no echo\n%s\n%s" % (sc.describe(), proxy.diag()))
                        # The command must be the first byte of one read() of s_client's stdin:
                        # wait until s_client says it ran it before sending the next line.
                        updates = bytes(sc.err).count(b"KEYUPDATE")
                        self.assertTrue(sc.write(cmd), sc.describe())
                        self.assertTrue(sc.wait(lambda _, err: bytes(err).count(b"KEYUPDATE") > updates, 30),
                                        "s_client did not run the KeyUpdate\n" + sc.describe())
                    tail = b"after four key updates\n" * 50
                    expected += tail
                    self.assertTrue(sc.write(tail), sc.describe())
                    self.assertTrue(sc.wait(lambda o, _: bytes(o) == expected, 30),
                                    "the connection stopped working after the KeyUpdates\n%s\n%s"
                                    % (sc.describe(), proxy.diag()))
                finally:
                    sc.close()
                [e] = proxy.wait_access()
                self.assertEqual((e["rx_path"], e["tx_path"]), (path, path), e)
                self.assertEqual(e["bytes_up"], len(expected), e)
                self.assertEqual(e["bytes_down"], len(expected), e)
                self.assertEqual(e["close"], "client_close", e)


if __name__ == "__main__":
    unittest.main()
