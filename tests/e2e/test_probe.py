"""`ztproxy probe` on the host: the report parses, and it agrees with what this test finds out on
its own (Python's setsockopt(TCP_ULP, "tls") on a loopback connection). On the dev/CI host that
means kTLS is reported unavailable with a reason naming TCP_ULP; inside a kTLS kernel the
ktls-labelled check_probe_json.py asserts the opposite in detail.

The io_uring opcodes it reports must be exactly the ones the event loop submits: derived here
from the io_uring_prep_* calls in proxy/io/event_loop.cpp, each resolved to its opcode through the
installed liburing.h (the header the build used), never from a second hand-kept list.

Binary: $ZTPROXY_BIN.
"""
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import unittest

from harness import SOURCE_DIR

TCP_ULP = getattr(socket, "TCP_ULP", 31)
PREP_CALL_RE = re.compile(r"\bio_uring_prep_(\w+)\s*\(")


def liburing_header():
    """The liburing.h the build found (pkg-config, as CMake does), else the system one."""
    include = "/usr/include"
    if shutil.which("pkg-config"):
        out = subprocess.run(["pkg-config", "--variable=includedir", "liburing"], capture_output=True,
                             text=True)
        if out.returncode == 0 and out.stdout.strip():
            include = out.stdout.strip()
    return os.path.join(include, "liburing.h")


def prep_opcodes(header_text):
    """{helper suffix: opcode name} for liburing's io_uring_prep_* helpers: the IORING_OP_ a
    helper passes to the generic io_uring_prep_rw, or, for one that delegates
    (multishot_accept -> accept), the opcode of the helper it calls."""
    bodies = {}
    for m in re.finditer(r"^static inline \w+ io_uring_prep_(\w+)\s*\([^)]*\)\s*\{(.*?)^\}",
                         header_text, re.M | re.S):
        bodies[m.group(1)] = m.group(2)

    def resolve(name, seen=()):
        body = bodies.get(name)
        if body is None or name in seen:
            return None
        op = re.search(r"\bio_uring_prep_rw\s*\(\s*IORING_OP_(\w+)", body)
        if op:
            return op.group(1)
        call = PREP_CALL_RE.search(body)
        return resolve(call.group(1), seen + (name,)) if call else None

    return {name: resolve(name) for name in bodies}


def event_loop_opcodes():
    """The opcodes proxy/io/event_loop.cpp submits (its io_uring_prep_* calls)."""
    with open(liburing_header()) as f:
        table = prep_opcodes(f.read())
    with open(os.path.join(SOURCE_DIR, "proxy", "io", "event_loop.cpp")) as f:
        helpers = set(PREP_CALL_RE.findall(f.read()))
    unknown = {h for h in helpers if not table.get(h)}
    assert not unknown, "io_uring_prep_%s not resolved to an opcode in %s" % (unknown, liburing_header())
    return {table[h] for h in helpers}


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
        self.assertEqual(set(uring["ops"]), event_loop_opcodes())
        # The loop runs on this host (every e2e suite proves it), so each of its opcodes exists.
        self.assertEqual([op for op, ok in uring["ops"].items() if not ok], [])
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

    def test_event_loop_is_the_only_submitter(self):
        # event_loop_opcodes() reads one file: that holds only while every other io_uring_prep_*
        # call in proxy/ is the probe's own throwaway ring.
        others = []
        for root, _, files in os.walk(os.path.join(SOURCE_DIR, "proxy")):
            for name in files:
                path = os.path.join(root, name)
                rel = os.path.relpath(path, SOURCE_DIR)
                if rel in ("proxy/io/event_loop.cpp", "proxy/io/uring_probe.cpp"):
                    continue
                if name.endswith((".cpp", ".hpp")):
                    with open(path) as f:
                        if PREP_CALL_RE.search(f.read()):
                            others.append(rel)
        self.assertEqual(others, [])

    def test_opcode_names_match_their_constants(self):
        # The probe prints kUringOps' names: each must be its IORING_OP_ constant's, or the report
        # would name one opcode and test another.
        with open(os.path.join(SOURCE_DIR, "proxy", "io", "uring_ops.hpp")) as f:
            pairs = re.findall(r'\{"(\w+)",\s*IORING_OP_(\w+)\}', f.read())
        self.assertTrue(pairs)
        self.assertEqual([n for n, c in pairs if n != c], [])
        self.assertEqual({n for n, _ in pairs}, event_loop_opcodes())

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
