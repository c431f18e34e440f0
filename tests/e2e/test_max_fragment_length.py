"""max_fragment_length (RFC 6066): `openssl s_client -maxfraglen 512` downloads 65,536 bytes
through ztproxy on every record path, TLS 1.2 and 1.3. s_client refuses any record longer than the
negotiated 512 bytes ("data length too long"), so every byte arriving proves that each record path
sealed records of at most 512 bytes of plaintext.

On the host (no kTLS) the userspace and openssl paths are forced in turn. Inside the kTLS kernel
(ZTP_E2E_KTLS=1, set by the ktls_max_fragment_length test in tests/ktls) the listener keeps
record_path auto. Linux 6.1 cannot bound kTLS TX records, so the session falls back to the userspace
path, counted as ztproxy_ktls_fallbacks_total{reason="max_fragment_length"} and logged as
ktls_fallback=max_fragment_length in the access log. A kernel that can (TLS_TX_MAX_PAYLOAD_LEN, as
in the rekey suite's kernel) keeps the session in the kernel, and s_client checks its records.
"""

import os
import unittest

from backend import pattern_chunks
from harness import FORCED_RECORD_PATH, LocalhostTestCase, SClientSession, metric, scrape

SIZE = 65536
IN_KTLS_KERNEL = os.environ.get("ZTP_E2E_KTLS") == "1"


class MaxFragmentLengthTest(LocalhostTestCase):
    def download(self, proxy, version):
        sc = SClientSession(proxy.port, "localhost", self.ca.cert,
                            ["-maxfraglen", "512", version, "-ign_eof"])
        request = b"GET /bytes/%d HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % SIZE
        try:
            self.assertTrue(sc.write(request), sc.describe())
            # Headers, then exactly SIZE bytes of body; s_client exits when the proxy closes.
            done = sc.wait(lambda o, _: b"\r\n\r\n" in o and len(o.split(b"\r\n\r\n", 1)[1]) >= SIZE, 60)
            self.assertTrue(done, "download incomplete (%d bytes)\n%s\n%s"
                            % (len(sc.out), sc.describe(), proxy.diag()))
        finally:
            sc.close()
        self.assertNotIn(b"too long", bytes(sc.err), sc.describe())
        body = bytes(sc.out).split(b"\r\n\r\n", 1)[1]
        self.assertEqual(body, b"".join(pattern_chunks(SIZE)))
        [e] = proxy.wait_access()
        return e

    def test_download_with_max_fragment_length_512(self):
        http = self.start_backend("http")
        bounded = False
        if IN_KTLS_KERNEL:
            paths = ("auto",)
            # Run from tests/ktls (test_ktls_max_fragment_length.py), whose directory is on the path.
            from test_ktls_e2e import kernel_bounds_tx_records
            bounded = kernel_bounds_tx_records()
        else:
            paths = (FORCED_RECORD_PATH,) if FORCED_RECORD_PATH else ("userspace", "openssl")
        for path in paths:
            for version in ("-tls1_2", "-tls1_3"):
                with self.subTest(record_path=path, version=version):
                    args = ["run", "--listen", "127.0.0.1:0", "--backend", http.address,
                            "--cert", self.leaf.cert, "--key", self.leaf.key, "--admin", "127.0.0.1:0"]
                    if path != "auto":
                        args += ["--record-path", path]
                    proxy = self.start_proxy(args)
                    e = self.download(proxy, version)
                    want = path
                    if path == "auto":
                        # The kernel path only where the kernel bounds its TX records (a kernel
                        # capability, not a setting).
                        want = "kernel" if bounded else "userspace"
                    self.assertEqual((e["rx_path"], e["tx_path"]), (want, want), e)
                    status, text = scrape(proxy.admin_address())
                    self.assertEqual(status, 200)
                    fallbacks = metric(text, "ztproxy_ktls_fallbacks_total", reason="max_fragment_length")
                    if IN_KTLS_KERNEL and not bounded:
                        # The kernel cannot bound its records: the session left it, counted.
                        self.assertEqual(e.get("ktls_fallback"), "max_fragment_length", e)
                        self.assertEqual(fallbacks, 1, text)
                    else:
                        self.assertEqual(fallbacks, 0, text)


if __name__ == "__main__":
    unittest.main()
