"""systemd integration without systemd: the readiness protocol through a NOTIFY_SOCKET this test
binds (READY=1 once the port accepts, RELOADING=1 + MONOTONIC_USEC then READY=1 around SIGHUP,
STOPPING=1 on SIGTERM), and socket activation with listening sockets handed over as fd 3... with
LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, as systemd does, followed by real TLS traffic.
"""

import array
import os
import signal
import socket
import ssl
import sys
import time
import unittest

from harness import (curl, curl_args, EVENT_TIMEOUT, HttpConn, LocalhostTestCase, policy_toml,
                     Proc, s_client, ztproxy_bin)

# Execs ztproxy (argv[3:]) with the sockets argv[1] (comma-separated fds) as 3, 4, ... and the
# LISTEN_* variables naming this very process, which is what systemd does before exec.
LAUNCHER = r"""
import fcntl, os, sys
fds = [int(x) for x in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
for fd in fds:
    if fd >= 3 + len(fds):
        os.close(fd)
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_PID"] = str(os.getpid())
if sys.argv[2]:
    os.environ["LISTEN_FDNAMES"] = sys.argv[2]
os.execv(sys.argv[3], sys.argv[3:])
"""


def launcher(socks, names=""):
    return [sys.executable, "-c", LAUNCHER, ",".join(str(s.fileno()) for s in socks), names]


def listening_socket(backlog=64):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    if backlog:
        s.listen(backlog)
    return s


class NotifySocket:
    """The receiving end of sd_notify: an AF_UNIX datagram socket with sender credentials."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(EVENT_TIMEOUT)

    def next(self):
        """(assignments dict, sender pid) of the next message."""
        creds = array.array("i", [0, 0, 0])
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds.itemsize * 3))
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                creds = array.array("i")
                creds.frombytes(payload[:12])
                pid = creds[0]
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        return fields, pid

    def close(self):
        self.sock.close()


class SystemdTest(LocalhostTestCase):
    def policy(self, backend, address="127.0.0.1:0", workers=2):
        return policy_toml(
            listeners=[{"name": "main", "address": address, "certs": [("main", self.leaf, None)]}],
            backends=[{"name": "app", "addresses": [backend.address]}],
            routes=[{"default": True, "backend": "app"}],
            sections={"runtime": {"workers": workers}})

    def get(self, port):
        r = curl(curl_args("localhost", port, "/bytes/1000", self.ca.cert) + ["-o", os.devnull,
                                                                             "-w", "%{http_code}"])
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.decode()

    # ---------------------------------------------------------------------------------------
    # sd_notify

    def test_ready_reloading_and_stopping(self):
        notify = NotifySocket(self.tmp)
        self.addCleanup(notify.close)
        backend = self.start_backend("http")
        path = self.write_policy(self.policy(backend))
        proxy = self.start_proxy(["run", "-c", path], env={"NOTIFY_SOCKET": notify.path})

        msg, pid = notify.next()
        self.assertEqual(msg.get("READY"), "1", msg)
        self.assertEqual(pid, proxy.pid, "sent by the main process (systemd's NotifyAccess=main)")
        self.assertEqual(msg.get("STATUS"), "serving 1 listener(s) with 2 worker(s)")
        # READY=1 means serving: the very next connection is answered.
        self.assertEqual(self.get(proxy.port), "200")

        before = time.monotonic_ns() // 1000
        proxy.send_signal(signal.SIGHUP)
        msg, _ = notify.next()
        after = time.monotonic_ns() // 1000
        self.assertEqual(msg.get("RELOADING"), "1", msg)
        self.assertTrue(before <= int(msg["MONOTONIC_USEC"]) <= after,
                        "MONOTONIC_USEC %s not within [%d, %d]" % (msg["MONOTONIC_USEC"], before, after))
        msg, _ = notify.next()
        self.assertEqual(msg.get("READY"), "1", msg)
        self.assertIn("policy reloaded", msg.get("STATUS", ""))

        # A failed reload ends the reload too (READY=1), and says so in STATUS.
        with open(path, "a") as f:
            f.write("\n[limits]\nnot_a_key = 1\n")
        proxy.send_signal(signal.SIGHUP)
        msg, _ = notify.next()
        self.assertEqual(msg.get("RELOADING"), "1", msg)
        msg, _ = notify.next()
        self.assertEqual(msg.get("READY"), "1", msg)
        self.assertIn("reload failed", msg.get("STATUS", ""))
        self.assertEqual(self.get(proxy.port), "200")

        proxy.send_signal(signal.SIGTERM)
        msg, _ = notify.next()
        self.assertEqual(msg.get("STOPPING"), "1", msg)
        self.assertIn("draining", msg.get("STATUS", ""))
        rc, killed = proxy.stop()
        self.assertEqual((rc, killed), (0, False), proxy.diag())

    # ---------------------------------------------------------------------------------------
    # socket activation

    def activated_proxy(self, sock, backend, names="", label="ztproxy"):
        path = self.write_policy(self.policy(backend, address="127.0.0.1:%d" % sock.getsockname()[1]))
        return self.start_proxy(["run", "-c", path], exec_prefix=launcher([sock], names),
                                pass_fds=(sock.fileno(),), label=label)

    def holds_socket(self, pid, sock):
        want = "socket:[%d]" % os.fstat(sock.fileno()).st_ino
        fds = os.listdir("/proc/%d/fd" % pid)
        return sum(1 for fd in fds if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == want)

    def test_inherited_socket_serves_tls_and_outlives_a_restart(self):
        sock = listening_socket()
        self.addCleanup(sock.close)
        backend = self.start_backend("http")
        proxy = self.activated_proxy(sock, backend, names="main")
        proxy.wait_line("stderr", r"listener 'main': using inherited socket fd 3 \('main'\), shared by 2 worker")
        self.assertEqual(proxy.port, sock.getsockname()[1])
        # Both workers accept on the one socket (a descriptor each); nothing else was bound.
        self.assertEqual(self.holds_socket(proxy.pid, sock), 2)
        for _ in range(3):
            self.assertEqual(self.get(proxy.port), "200")
        r = s_client(proxy.port, b"GET /bytes/100 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                     100, servername="localhost", cafile=self.ca.cert)
        self.assertTrue(r.stdout.startswith(b"HTTP/1.1 200"), r.describe())
        self.assertEqual(proxy.stop(), (0, False), proxy.diag())

        # The socket stayed open here (as with systemd): a client arriving while no ztproxy runs
        # waits in the backlog, and the next instance serves it.
        waiting = socket.create_connection(("127.0.0.1", sock.getsockname()[1]), timeout=EVENT_TIMEOUT)
        self.addCleanup(waiting.close)
        second = self.activated_proxy(sock, backend, label="ztproxy-2")
        tls = ssl.create_default_context(cafile=self.ca.cert).wrap_socket(waiting, server_hostname="localhost")
        conn = HttpConn(tls)
        conn.request("GET", "/bytes/10", "localhost")
        self.assertEqual(conn.response().status, 200)
        tls.close()
        second.wait_access(count=1)

    def refused(self, socks, names, policy_address, expect):
        backend = self.start_backend("http")
        path = self.write_policy(self.policy(backend, address=policy_address))
        p = Proc("ztproxy", launcher(socks, names) + [ztproxy_bin(), "run", "-c", path],
                 pass_fds=tuple(s.fileno() for s in socks))
        self.addCleanup(p.kill)
        rc = p.wait_exit(EVENT_TIMEOUT)
        self.assertEqual(rc, 1, p.diag())
        p.wait_line("stderr", expect)

    def test_a_socket_no_listener_claims_is_refused(self):
        sock = listening_socket()
        self.addCleanup(sock.close)
        self.refused([sock], "", "127.0.0.1:0",
                     r"socket activation: inherited socket fd 3 \('unknown', bound to 127\.0\.0\.1:%d\) "
                     r"matches no \[\[listener\]\]" % sock.getsockname()[1])

    def test_a_name_whose_address_disagrees_is_refused(self):
        sock = listening_socket()
        self.addCleanup(sock.close)
        self.refused([sock], "main", "127.0.0.1:1",
                     r"inherited socket fd 3 \('main', bound to 127\.0\.0\.1:%d\) is named like listener "
                     r"'main', whose address is 127\.0\.0\.1:1" % sock.getsockname()[1])

    def test_a_socket_that_does_not_listen_is_refused(self):
        sock = listening_socket(backlog=0)
        self.addCleanup(sock.close)
        self.refused([sock], "main", "127.0.0.1:%d" % sock.getsockname()[1],
                     r"inherited socket fd 3 \('main'\) is not a listening TCP socket")


if __name__ == "__main__":
    unittest.main()
