"""Privilege drop and the seccomp allow-list on the real code paths: ztproxy started as root with
[process] user = "nobody" runs every thread as nobody with no capability at all, no_new_privs and
the seccomp filter, and still serves curl and s_client, a bulk transfer, a SIGHUP reload that
re-reads certificates as nobody, the admin endpoint, and a drain. Any system call missing from the
allow-list kills the process (SIGSYS), which fails these tests. CTest runs this suite on every
record path (ZTP_E2E_RECORD_PATH).
"""

import os
import re
import signal
import unittest
import urllib.request

from harness import (CertAuthority, E2ETestCase, HttpConn, LocalhostTestCase, Proc, curl, curl_args, policy_toml,
                     s_client, tls_connect, ztproxy_bin)

NOBODY = 65534
MIB = 1024 * 1024


def status_fields(path):
    with open(path) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def threads(pid):
    """{tid: (comm, /proc status fields)} for every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        base = "/proc/%d/task/%s/" % (pid, tid)
        with open(base + "comm") as f:
            out[int(tid)] = (f.read().strip(), status_fields(base + "status"))
    return out


def subject_cn(sock):
    return dict(x[0] for x in sock.getpeercert()["subject"])["commonName"]


def readable_by_nobody(*paths):
    """Directories searchable, files owned by nobody (keys stay 0600, as a service user's would)."""
    for p in paths:
        if os.path.isdir(p):
            os.chmod(p, 0o755)
        else:
            os.chown(p, NOBODY, NOBODY)


@unittest.skipUnless(os.geteuid() == 0, "switching users needs root (CI runs as root)")
class PrivilegeDropTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        pki = os.path.join(cls.class_tmp, "pki")
        cls.ca = CertAuthority(pki)
        cls.old = cls.ca.issue("old", "ec", dns=["localhost"], cn="old certificate")
        cls.new = cls.ca.issue("new", "rsa", dns=["localhost"], cn="new certificate")
        readable_by_nobody(cls.class_tmp, pki, cls.old.cert, cls.old.key, cls.new.cert, cls.new.key)

    def setUp(self):
        super().setUp()
        os.chmod(self.tmp, 0o755)  # the policy is re-read as nobody on SIGHUP

    def policy(self, leaf, backend, process):
        return policy_toml(
            listeners=[{"name": "main", "certs": [("main", leaf, None)]}],
            backends=[{"name": "app", "addresses": [backend.address]}],
            routes=[{"default": True, "backend": "app"}],
            sections={"process": process, "runtime": {"workers": 2}})

    def get_cn(self, proxy):
        with tls_connect(proxy.port, "localhost", self.ca.cert) as s:
            conn = HttpConn(s)
            conn.request("GET", "/bytes/100", "localhost")
            self.assertEqual(conn.response().status, 200)
            return subject_cn(s)

    def assert_dropped(self, pid):
        tasks = threads(pid)
        self.assertGreaterEqual(len(tasks), 4, "main, two workers and the admin thread: %r" % tasks)
        for tid, (comm, st) in tasks.items():
            with self.subTest(thread=tid, comm=comm):
                self.assertEqual(st["Uid"].split(), [str(NOBODY)] * 4)
                self.assertEqual(st["Gid"].split(), [str(NOBODY)] * 4)
                self.assertEqual(st["Groups"].split(), [str(NOBODY)])  # nobody's own: nogroup
                for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                    self.assertEqual(int(st[cap], 16), 0, "%s %s" % (cap, st[cap]))
                self.assertEqual(st["NoNewPrivs"], "1")
                # io_uring's own kernel threads (iou-wrk-*) never return to user space.
                if not comm.startswith("iou-"):
                    self.assertEqual(st["Seccomp"], "2", "filter mode")

    def test_runs_as_nobody_and_serves_every_path_under_seccomp(self):
        backend = self.start_backend("http")
        path = self.write_policy(self.policy(self.old, backend, {"user": "nobody", "group": "nogroup"}))
        os.chmod(path, 0o644)
        proxy = self.start_proxy(["run", "-c", path, "--admin", "127.0.0.1:0"])
        proxy.wait_line("stderr", r"running as uid=65534 gid=65534 supplementary_groups=1 capabilities=none")
        proxy.wait_line("stderr", r"seccomp filter installed")
        admin = proxy.wait_line("stderr", r"admin endpoint on (\S+:\d+)").group(1)
        self.assert_dropped(proxy.pid)

        for _ in range(3):
            r = curl(curl_args("localhost", proxy.port, "/bytes/50000", self.ca.cert) + ["-o", os.devnull,
                                                                                         "-w", "%{http_code}"])
            self.assertEqual((r.returncode, r.stdout), (0, b"200"), r.stderr)
        sc = s_client(proxy.port, b"GET /bytes/300 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                      300, servername="localhost", cafile=self.ca.cert)
        self.assertTrue(sc.stdout.startswith(b"HTTP/1.1 200"), sc.describe())
        with tls_connect(proxy.port, "localhost", self.ca.cert) as s:
            conn = HttpConn(s)
            body = b"u" * (4 * MIB)
            conn.request("POST", "/echo-body", "localhost", body=body)
            self.assertEqual(conn.response().body, body)
        self.assertEqual(self.get_cn(proxy), "old certificate")

        # Reload as nobody: the policy and the new certificate and key are read with its rights.
        self.write_policy(self.policy(self.new, backend, {"user": "nobody", "group": "nogroup"}))
        mark = len(proxy.err.snapshot())
        proxy.send_signal(signal.SIGHUP)
        proxy.wait_line("stderr", r"reload applied", start=mark, what="the reload as nobody")
        self.assertEqual(self.get_cn(proxy), "new certificate")

        with urllib.request.urlopen("http://%s/metrics" % admin, timeout=10) as r:
            text = r.read().decode()
        self.assertRegex(text, r'ztproxy_reloads_total\{result="ok"\} 1\b')
        self.assertRegex(text, r"ztproxy_connections_total \d+")

        proxy.wait_access(count=7)
        self.assert_dropped(proxy.pid)
        self.assertEqual(proxy.stop(), (0, False), proxy.diag())

    def test_the_splice_pipe_limits_are_checked_at_start_for_the_dropped_user(self):
        # CAP_SYS_RESOURCE lifts fs.pipe-max-size and fs.pipe-user-pages-*, CAP_SYS_ADMIN the
        # latter; nobody has no capability. Worker 0 says what the policy needs of them, with the value to
        # set (proxy/conn/pipe_budget.cpp), and serves anyway.
        backend = self.start_backend("http")
        with open("/proc/sys/fs/pipe-max-size") as f:
            max_size = int(f.read())
        with open("/proc/sys/fs/pipe-user-pages-soft") as f:
            soft = int(f.read())
        buffer = 16 << 20  # the largest connection_buffer
        pipes = 2 * 10000 + 2 * 256  # 2 per connection (default max_connections), 256 idle per worker

        def start(process, limits):
            policy = policy_toml(
                listeners=[{"name": "main", "certs": [("main", self.old, None)], "tls": {"record_path": "auto"}}],
                backends=[{"name": "app", "addresses": [backend.address]}],
                routes=[{"default": True, "backend": "app"}],
                sections={"process": process, "runtime": {"workers": 2}, "limits": limits})
            path = self.write_policy(policy)
            os.chmod(path, 0o644)
            proxy = self.start_proxy(["run", "-c", path])
            r = curl(curl_args("localhost", proxy.port, "/bytes/100", self.ca.cert) + ["-o", os.devnull])
            self.assertEqual(r.returncode, 0, r.stderr)
            return proxy

        proxy = start({"user": "nobody", "group": "nogroup"}, {"connection_buffer": "16MiB"})
        checked = 0
        if max_size < buffer:
            m = proxy.wait_line("stderr", r"limits\.connection_buffer = 16777216 needs splice pipes of 16777216 "
                                          r"bytes, over fs\.pipe-max-size = (\d+): .*"
                                          r"\(sysctl fs\.pipe-max-size=16777216\)")
            self.assertEqual(int(m.group(1)), max_size)
            checked += 1
        pages = pipes * (buffer // os.sysconf("SC_PAGE_SIZE"))
        if 0 < soft < pages:
            m = proxy.wait_line("stderr", r"may hold (\d+) splice pipes .* over fs\.pipe-user-pages-soft = (\d+): "
                                          r".*\(sysctl fs\.pipe-user-pages-soft=(\d+)\)")
            self.assertEqual([int(g) for g in m.groups()], [pipes, soft, pages])
            checked += 1
        if not checked:
            self.skipTest("this host's pipe limits fit even 16 MiB pipes")
        proxy.stop()
        # 8 connections: 48 pipes of 64 KiB (16 idle per worker at most), 768 pages.
        quiet = start({"user": "nobody", "group": "nogroup"}, {"max_connections": 8})
        self.assertFalse([l for l in quiet.err.snapshot() if "fs.pipe-" in l], quiet.diag())

    def test_a_reload_that_cannot_read_its_key_as_nobody_is_refused(self):
        backend = self.start_backend("http")
        path = self.write_policy(self.policy(self.old, backend, {"user": "nobody"}))
        os.chmod(path, 0o644)
        proxy = self.start_proxy(["run", "-c", path])
        root_only = self.ca.issue("rootonly", "ec", dns=["localhost"])  # key 0600, owned by root
        self.write_policy(self.policy(root_only, backend, {"user": "nobody"}))
        mark = len(proxy.err.snapshot())
        proxy.send_signal(signal.SIGHUP)
        proxy.wait_line("stderr", r"reload rejected: .*rootonly\.key", start=mark)
        self.assertEqual(self.get_cn(proxy), "old certificate")

    def test_an_unknown_user_is_refused_by_run_and_check(self):
        backend = self.start_backend("http")
        path = self.write_policy(self.policy(self.old, backend, {"user": "ztp-no-such-user"}))
        for args in (["run", "-c", path], ["check", "-c", path]):
            with self.subTest(command=args[0]):
                p = Proc("ztproxy-" + args[0], [ztproxy_bin()] + args)
                self.addCleanup(p.kill)
                self.assertEqual(p.wait_exit(30), 1, p.diag())
                if args[0] == "check":
                    p.wait_line("stdout", re.escape(path) + r":\d+:\d+: user 'ztp-no-such-user' does not exist")
                else:
                    p.wait_line("stderr", r"\[process\]: user 'ztp-no-such-user' does not exist")


class SeccompModesTest(LocalhostTestCase):
    def start(self, mode):
        backend = self.start_backend("http")
        proxy = self.start_policy_proxy(policy_toml(
            listeners=[{"name": "main", "certs": [("main", self.leaf, None)]}],
            backends=[{"name": "app", "addresses": [backend.address]}],
            routes=[{"default": True, "backend": "app"}],
            sections={"process": {"seccomp": mode}}))
        r = curl(curl_args("localhost", proxy.port, "/bytes/1000", self.ca.cert) + ["-o", os.devnull])
        self.assertEqual(r.returncode, 0, r.stderr)
        return proxy, status_fields("/proc/%d/status" % proxy.pid)

    def test_require_enforces(self):
        proxy, st = self.start("require")
        self.assertEqual((st["Seccomp"], st["Seccomp_filters"]), ("2", "1"))
        proxy.wait_line("stderr", r"seccomp filter installed: calls outside the allow-list kill the process")

    def test_log_mode_filters_but_only_logs(self):
        proxy, st = self.start("log")
        self.assertEqual(st["Seccomp"], "2")
        proxy.wait_line("stderr", r"seccomp in log mode")

    def test_a_reload_that_turns_admission_on_enforces_it_in_user_space(self):
        # Programs load at start only: the filter has no BPF_PROG_LOAD (and the process no
        # CAP_BPF once dropped), so admission that appears in a reload runs after accept.
        backend = self.start_backend("http")
        text = policy_toml(
            listeners=[{"name": "main", "certs": [("main", self.leaf, None)]}],
            backends=[{"name": "app", "addresses": [backend.address]}],
            routes=[{"default": True, "backend": "app"}])
        path = self.write_policy(text)
        proxy = self.start_proxy(["run", "-c", path])
        self.write_policy(text.replace("[[backend]]", '[listener.admission]\ndeny = ["127.0.0.2/32"]\n\n[[backend]]', 1))
        mark = len(proxy.err.snapshot())
        proxy.send_signal(signal.SIGHUP)
        proxy.wait_line("stderr", r"reload applied", start=mark)
        proxy.wait_line("stderr", r"listener 'main': admission enforced in user space after accept \(eBPF programs "
                        r"are loaded at start only", start=mark)

        def curl_from(source):
            return curl(["--interface", source] + curl_args("localhost", proxy.port, "/", self.ca.cert) +
                        ["-o", os.devnull, "-w", "%{http_code}"], timeout=10)

        self.assertIn(curl_from("127.0.0.2").returncode, (35, 56), proxy.diag())
        r = curl_from("127.0.0.1")
        self.assertEqual((r.returncode, r.stdout), (0, b"200"), r.stderr)
        self.assertTrue(proxy.alive(), proxy.diag())

    def test_off_installs_nothing(self):
        proxy, st = self.start("off")
        self.assertEqual(st["Seccomp"], "0")
        proxy.wait_line("stderr", r"seccomp is off")


if __name__ == "__main__":
    unittest.main()
