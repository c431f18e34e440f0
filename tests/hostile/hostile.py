"""Shared by the hostile-label tests (issues 12 and 13): the hostile_peer CLI, proxy memory, the
record path a test runs on, and the sizes every test scales by.

Record paths: CTest runs each test once per path with ZTP_E2E_RECORD_PATH (userspace / openssl on
the host, kernel inside the kTLS kernel, where the variants are labelled `ktls` too). The e2e
harness forces every quick-mode and policy proxy onto that path and checks each access line
names it. On the kernel path main() exits 77 (CTest: skipped) on a host without kTLS, and fails
instead inside the VM (KTLS_VM_GUEST set), like tests/ktls.

Environment (sizes and durations; defaults keep the host label under a few minutes on 2 cores):
  HOSTILE_PEER_BIN                the CLI (CTest sets it; default build/tests/hostile/hostile_peer)
  ZTP_HOSTILE_KU_CONNECTIONS      KeyUpdate load: connections                       (8)
  ZTP_HOSTILE_KU_MIB              KeyUpdate load: MiB each connection downloads       (32)
  ZTP_HOSTILE_KU_REQUESTS         KeyUpdate load: requests (~ KeyUpdates) per connection (16)
  ZTP_HOSTILE_FLOOD_SECONDS       tiny-record flood duration                          (20)
  ZTP_HOSTILE_FLOOD_LIMIT_MIB     RSS growth allowed for the one flooding connection  (64)
  ZTP_HOSTILE_SLOW_CLIENTS        slow typing clients                                  (150)
  ZTP_HOSTILE_SLOW_SECONDS        how long each one types                              (4)
  ZTP_HOSTILE_SEED                random seed (default: random, printed)
"""

import json
import os
import random
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, os.path.join(HERE, "..", "ktls"))

from harness import FORCED_RECORD_PATH, SOURCE_DIR, describe_rc  # noqa: E402
# kernel_can_rekey: for the tests here, one probe for every kernel-path test.
from test_ktls_e2e import kernel_can_rekey, ktls_status  # noqa: E402,F401

SKIP = 77
IN_VM = os.environ.get("KTLS_VM_GUEST", "")
RECORD_PATH = FORCED_RECORD_PATH or "userspace"
KERNEL = RECORD_PATH == "kernel"


def env_int(name, default):
    return int(os.environ.get(name) or default)


def env_float(name, default):
    return float(os.environ.get(name) or default)


def seed():
    """The run's seed: ZTP_HOSTILE_SEED or a fresh one, printed so a failure can be replayed."""
    s = os.environ.get("ZTP_HOSTILE_SEED")
    s = int(s) if s else random.SystemRandom().randrange(1, 2 ** 31)
    sys.stderr.write("hostile: seed %d (replay with ZTP_HOSTILE_SEED=%d)\n" % (s, s))
    return s


def peer_bin():
    path = os.environ.get("HOSTILE_PEER_BIN") or os.path.join(SOURCE_DIR, "build", "tests", "hostile",
                                                               "hostile_peer")
    if not os.access(path, os.X_OK):
        raise unittest.SkipTest("no hostile_peer binary at %s (set HOSTILE_PEER_BIN)" % path)
    return path


class PeerRun:
    """hostile_peer running: its JSON lines collected by a thread. results() waits for the exit."""

    def __init__(self, port, steps, tls="1.3", cafile=None, sni="localhost", options=()):
        self.argv = [peer_bin(), "--connect", "127.0.0.1:%d" % port, "--tls", tls] + list(options)
        if cafile:
            self.argv += ["--cafile", cafile, "--sni", sni]
        self.argv += list(steps)
        self.p = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.lines, self.err = [], b""
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.t_err = threading.Thread(target=self._read_err, daemon=True)
        self.t_err.start()

    def _read(self):
        for raw in iter(self.p.stdout.readline, b""):
            try:
                j = json.loads(raw)
            except ValueError:
                j = {"unparsed": raw.decode("utf-8", "replace")}
            with self.cond:
                self.lines.append(j)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def _read_err(self):
        self.err = self.p.stderr.read()

    def wait_event(self, name, count=1, timeout=120.0):
        """The first `count` events {"event": name}; AssertionError on timeout or exit."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [l for l in self.lines if l.get("event") == name]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self.t.is_alive()):
                    raise AssertionError("hostile_peer: no %d %r events\n%s" % (count, name, self.describe()))
                self.cond.wait(min(left, 0.5))

    def release(self):
        """Ends a wait-stdin step."""
        try:
            self.p.stdin.close()
        except OSError:
            pass

    def results(self, timeout=300.0):
        """The per-connection result lines (sorted by conn), after the process exited."""
        self.release()
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(10)
            raise AssertionError("hostile_peer did not finish in %.0fs\n%s" % (timeout, self.describe()))
        self.t.join(10)
        self.t_err.join(10)
        for f in (self.p.stdout, self.p.stderr):
            f.close()
        return sorted((l for l in self.lines if "conn" in l and "ok" in l), key=lambda l: l["conn"])

    def kill(self):
        """Ends it if it still runs, and closes its pipes (idempotent)."""
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self.t.join(10)
        self.t_err.join(10)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            f.close()

    def describe(self):
        rc = self.p.poll()
        return "command: %s\nexit: %s\noutput: %s\nstderr: %s" % (
            " ".join(self.argv), "running" if rc is None else describe_rc(rc),
            "\n".join(json.dumps(l) for l in self.lines[-20:]), self.err.decode("utf-8", "replace")[-2000:])


def run_peer(port, steps, **kw):
    """Runs hostile_peer to its end; returns (results, the run for describe())."""
    run = PeerRun(port, steps, **kw)
    try:
        return run.results(), run
    finally:
        run.kill()


def rss_kib(pid):
    """VmRSS of a process, in KiB (/proc/PID/status)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def main(module="__main__"):
    """Runs the module's tests; the kernel-path variant exits 77 on a host without kTLS."""
    ok, why = ktls_status() if KERNEL else (True, "")
    if not ok:
        if IN_VM:
            print("FAIL: inside the kTLS VM (KTLS_VM_GUEST=%s) but kTLS is unavailable: %s" % (IN_VM, why))
            return 1
        print("SKIP: the kernel record path needs kTLS (%s); this variant runs inside "
              "tests/ktls/run-in-ktls-kernel.sh (ctest -R ktls_vm_suite)" % why)
        return SKIP
    prog = unittest.main(module=module, verbosity=2, exit=False)
    return 0 if prog.result.wasSuccessful() else 1
