"""`ztproxy probe` on the host: the report parses, and it agrees with what this test finds out on
its own (Python's setsockopt(TCP_ULP, "tls") on a loopback connection). On the dev/CI host that
means kTLS is reported unavailable with a reason naming TCP_ULP; inside a kTLS kernel the
ktls-labelled check_probe_json.py asserts the opposite in detail.

Binary: $ZTPROXY_BIN.
"""
import errno
import json
import os
import socket
import subprocess
import unittest

TCP_ULP = getattr(socket, "TCP_ULP", 31)


def kernel_has_ktls():
    """(available, errno) from attaching the "tls" ULP to a connected loopback TCP socket."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()) as client:
            server, _ = listener.accept()
            with server:  # open until after the attempt: the ULP needs an ESTABLISHED socket
                try:
                    client.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
                    return True, 0
                except OSError as e:
                    return False, e.errno


class ProbeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.binary = os.environ.get("ZTPROXY_BIN")
        if not cls.binary:
            raise unittest.SkipTest("ZTPROXY_BIN is not set")

    def run_probe(self, *args):
        out = subprocess.run([self.binary, "probe", *args], capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, f"probe exited {out.returncode}: {out.stderr}")
        return out.stdout

    def test_json_report(self):
        report = json.loads(self.run_probe("--json"))
        self.assertTrue(report["kernel"]["release"])
        self.assertEqual(report["kernel"]["release"], os.uname().release)

        ktls = report["ktls"]
        self.assertEqual(len(ktls["entries"]), 6)
        self.assertEqual({(e["version"], e["cipher"]) for e in ktls["entries"]},
                         {(v, c) for v in ("1.2", "1.3")
                          for c in ("AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305")})
        available, err = kernel_has_ktls()
        self.assertEqual(ktls["ulp_available"], available, ktls["why_not"])
        if not available:
            self.assertFalse(ktls["available"])
            self.assertIn("TCP_ULP", ktls["why_not"])
            self.assertIn(os.strerror(err), ktls["why_not"])
            if err == errno.ENOENT:
                self.assertIn("CONFIG_TLS", ktls["why_not"])
            for e in ktls["entries"]:
                self.assertFalse(e["tx"])
                self.assertFalse(e["rx"])
                self.assertIn("TCP_ULP", e["error"])

        uring = report["io_uring"]
        self.assertTrue(uring["available"], uring["why_not"])
        self.assertEqual(set(uring["ops"]),
                         {"ACCEPT", "RECV", "SEND", "SENDMSG", "RECVMSG", "SPLICE", "POLL_ADD", "TIMEOUT",
                          "LINK_TIMEOUT", "ASYNC_CANCEL", "CLOSE", "SHUTDOWN", "CONNECT", "SEND_ZC"})
        for op in ("ACCEPT", "RECV", "SEND", "SPLICE"):
            self.assertTrue(uring["ops"][op], op)
        self.assertIsInstance(uring["multishot_accept"], bool)
        self.assertIsInstance(uring["buf_ring"], bool)

        bpf = report["bpf"]
        self.assertIsInstance(bpf["prog_load"], bool)
        self.assertEqual(bpf["btf_vmlinux"], os.access("/sys/kernel/btf/vmlinux", os.R_OK))
        if not bpf["prog_load"]:
            self.assertTrue(bpf["why_not"])
        for k in ("socket_attach", "admission", "steering"):
            self.assertIsInstance(bpf[k], bool, k)
            if not bpf["prog_load"]:
                self.assertFalse(bpf[k], k)
        if os.geteuid() == 0 and bpf["prog_load"]:
            # As root on these machines the programs ztproxy uses must load (the bpf label's
            # tests prove the same programs work).
            self.assertTrue(bpf["admission"] and bpf["socket_attach"] and bpf["steering"], bpf)

    def test_text_report(self):
        text = self.run_probe()
        self.assertIn(os.uname().release, text)
        for section in ("kTLS", "io_uring", "BPF"):
            self.assertIn(section, text)
        available, _ = kernel_has_ktls()
        if not available:
            self.assertIn("TCP_ULP", text)


if __name__ == "__main__":
    unittest.main()
