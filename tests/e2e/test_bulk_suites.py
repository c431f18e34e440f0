"""ztproxy end to end, volume per suite on the userspace record path: for TLS 1.2 and 1.3 and each
of AES-128-GCM, AES-256-GCM and CHACHA20-POLY1305, curl uploads 64 MiB and downloads 64 MiB
through `--record-path userspace`, with sha256 checked at the far end of each transfer.

One backend and one proxy serve the whole class. The proxy is forced onto the userspace path by
its own flag, so this suite runs once (it is not one of the traffic suites CMake repeats per path).
"""

import json
import os
import unittest

import backend as backend_mod
from harness import Backend, LocalhostTestCase, Proxy, curl, curl_args, file_size_and_sha256

MIB = 1024 * 1024
BIG = 64 * MIB

# (access-log version, OpenSSL cipher name: what curl is told to offer and what the log must say)
SUITES = [
    ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ("TLSv1.3", "TLS_AES_128_GCM_SHA256"),
    ("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"),
]


def curl_suite_args(version, cipher):
    """curl offers exactly this version and cipher."""
    if version == "TLSv1.2":
        return ["--tlsv1.2", "--tls-max", "1.2", "--ciphers", cipher]
    return ["--tlsv1.3", "--tls13-ciphers", cipher]


class UserspaceSuitesTest(LocalhostTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.http = Backend("http")
        cls.addClassCleanup(cls.http.stop)
        cls.proxy = Proxy(["run", "--listen", "127.0.0.1:0", "--backend", cls.http.address,
                           "--cert", cls.leaf.cert, "--key", cls.leaf.key, "--alpn", "http/1.1",
                           "--record-path", "userspace"])
        cls.addClassCleanup(cls._stop_proxy, cls.proxy)
        cls.upload = os.path.join(cls.class_tmp, "upload.bin")
        with open(cls.upload, "wb") as f:
            for c in backend_mod.pattern_chunks(BIG):
                f.write(c)
        cls.expected = backend_mod.pattern_sha256(BIG)

    def transfer_both_ways(self, version, cipher):
        suite = curl_suite_args(version, cipher)
        # Upload: the backend hashes what it received.
        r = curl(suite + ["--data-binary", "@" + self.upload, "-H", "Content-Type: application/octet-stream"]
                 + curl_args("localhost", self.proxy.port, "/sha256", self.ca.cert), timeout=150)
        self.assertEqual(r.returncode, 0, "curl upload: %s\n%s" % (r.stderr, self.proxy.diag()))
        self.assertEqual(json.loads(r.stdout), {"sha256": self.expected, "length": BIG})

        # Download: we hash what curl received.
        path = os.path.join(self.tmp, "download.bin")
        start = len(self.http.out.snapshot())
        r = curl(suite + ["-o", path] + curl_args("localhost", self.proxy.port, "/bytes/%d" % BIG, self.ca.cert),
                 timeout=150)
        self.assertEqual(r.returncode, 0, "curl download: %s\n%s" % (r.stderr, self.proxy.diag()))
        got = file_size_and_sha256(path)
        os.unlink(path)
        self.assertEqual(got, (BIG, self.expected))
        self.http.wait_event(r"^BYTES_DONE .* sent=%d$" % BIG, start=start)

        entries = self.proxy.wait_access(lambda e: e.get("cipher") == cipher, count=2,
                                         what="negotiating %s %s" % (version, cipher))
        self.assertEqual(len(entries), 2, entries)
        for e in entries:
            self.assertEqual((e["version"], e["rx_path"], e["tx_path"], e["close"]),
                             (version, "userspace", "userspace", "client_close"), e)
        [up] = [e for e in entries if e["bytes_up"] > BIG]
        [down] = [e for e in entries if e["bytes_down"] > BIG]
        self.assertLess(up["bytes_up"], BIG + 4096, up)  # + request head
        self.assertGreater(down["bytes_down"], BIG, down)
        self.assertLess(down["bytes_down"], BIG + 4096, down)  # + response head


def _suite_test(version, cipher):
    def test(self):
        self.transfer_both_ways(version, cipher)
    test.__doc__ = "64 MiB up and 64 MiB down, %s %s" % (version, cipher)
    return test


for _version, _cipher in SUITES:
    setattr(UserspaceSuitesTest, "test_64mib_up_and_down_%s_%s" % (_version.replace(".", ""),
                                                                    _cipher.replace("-", "_").lower()),
            _suite_test(_version, _cipher))


if __name__ == "__main__":
    unittest.main()
