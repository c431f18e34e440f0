#!/usr/bin/env python3
"""The interop matrix (issue 13): real TLS clients from Debian packages against the real ztproxy.

    interop.py --path userspace|openssl|kernel --family gnutls|nss_botan|openssl [--results FILE]
    interop.py --markdown RESULTS.json...      (the README table from the runs' results)

One proxy per run, on the record path given (`kernel`: record_path "auto" inside the kTLS kernel,
and every session must then be on the kernel path unless it negotiated max_fragment_length and
the kernel cannot bound kTLS TX records). It has two listeners: `echo` in front of an echo backend
(clients that stream stdin to the server and the server's bytes to stdout) and `http` in front of
the e2e HTTP backend (clients that speak HTTP: POST /echo-body answers the body). Every cell of
client x variant x TLS version x cipher is one connection, run concurrently on a thread pool:

  * a full handshake with certificate and host name verification against the test CA, with the
    client restricted to the cell's version and cipher (and the access log must name both);
  * a request and a response of 64 KiB and more (several full records; 16 KiB and more, 32
    records of 512 bytes, for max_fragment_length; 8 KiB and more for gnutls-cli inside UML, see
    BASE), every byte compared with the pattern sent;
  * a clean close, client side (close_notify; the client exits 0), or server side for tstclnt,
    which never closes by itself (the backend closes after its answer, the proxy sends
    close_notify);
  * KeyUpdate cells (TLS 1.3): half of the data, the client's KeyUpdate (gnutls-cli ^rekey^ /
    ^rekey1^, s_client k / K: not requested / update_requested), the rest, all verified. On the
    kernel path of a kernel below Linux 6.14 (told by `uname -r` in the guest) kTLS cannot take
    the next key: there the documented outcome is asserted instead, the first half echoed and
    then a clean close by the proxy, close=key_update_unsupported, counted in
    ztproxy_ktls_key_update_closes_total. Elsewhere ztproxy_key_updates_total must count every
    KeyUpdate (not on the openssl path, where OpenSSL follows them and the counter is the record
    layers').

A cell the client cannot do is reported as a skip with its reason, never as a pass. Access-log
lines are matched to cells by bytes_up: every cell sends a different length (see BASE).
Environment: ZTPROXY_BIN, ZTP_SOURCE_DIR (as the e2e tests), ZTP_INTEROP_JOBS (concurrent cells,
default 6). Exit 0 all passed, 1 a cell or check failed, 77 the kernel path outside a kTLS kernel.
"""

import argparse
import array
import concurrent.futures
import fcntl
import hashlib
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import tempfile
import termios
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, os.path.join(HERE, "..", "ktls"))

from harness import (Backend, CertAuthority, PipeReaders, Proxy, describe_rc, metric, policy_toml,  # noqa: E402
                     scrape, wait_until)

SKIP = 77
IN_VM = bool(os.environ.get("KTLS_VM_GUEST"))
NAME = "localhost"
VERSIONS = ("1.2", "1.3")
CIPHERS = ("AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305")
TIMEOUT = 90.0  # one client step; generous for User-Mode Linux, where a system call costs ~30 µs

# Cell sizes. Every cell sends a different number of bytes, at least STRIDE more than the cell
# before it, so that its access line is told apart by bytes_up: exactly its size for echo cells,
# up to HTTP_HEAD more for the HTTP clients' request head. A KeyUpdate cell closed by a < 6.14
# kernel sent TAIL bytes less, and TAIL % STRIDE = STRIDE / 2 keeps that apart from every other
# cell's window. Sizes start at BASE (four 16 KiB records), at SMALL_BASE for max_fragment_length
# cells (32 records of 512 bytes, which gnutls-cli sends one at a time), at UML_GNUTLS_BASE for
# gnutls-cli inside User-Mode Linux (16 records of 512 bytes, or 2 of gnutls-cli's 4 KiB sends and
# more): gnutls-cli writes what it receives one byte per write(2), and each system call there is
# a round trip through the host's ptrace (tens of µs; 64 KiB took 27 s on a busy host).
LINE = 64
BASE = 64 * 1024
SMALL_BASE = 16 * 1024
UML_GNUTLS_BASE = 8 * 1024
STRIDE = 1024
TAIL = 4 * 1024 + STRIDE // 2
HTTP_HEAD = STRIDE // 2  # curl's is about 170 bytes

# The names each stack gives the cell's cipher (ECDSA certificate for TLS 1.2).
OPENSSL_NAME = {
    ("1.3", "AES-128-GCM"): "TLS_AES_128_GCM_SHA256",
    ("1.3", "AES-256-GCM"): "TLS_AES_256_GCM_SHA384",
    ("1.3", "CHACHA20-POLY1305"): "TLS_CHACHA20_POLY1305_SHA256",
    ("1.2", "AES-128-GCM"): "ECDHE-ECDSA-AES128-GCM-SHA256",
    ("1.2", "AES-256-GCM"): "ECDHE-ECDSA-AES256-GCM-SHA384",
    ("1.2", "CHACHA20-POLY1305"): "ECDHE-ECDSA-CHACHA20-POLY1305",
}
NSS_CODE = {  # tstclnt -c :XXXX (IANA code points)
    ("1.3", "AES-128-GCM"): "1301", ("1.3", "AES-256-GCM"): "1302", ("1.3", "CHACHA20-POLY1305"): "1303",
    ("1.2", "AES-128-GCM"): "C02B", ("1.2", "AES-256-GCM"): "C02C", ("1.2", "CHACHA20-POLY1305"): "CCA9",
}
BOTAN_NAME = {"AES-128-GCM": "AES-128/GCM", "AES-256-GCM": "AES-256/GCM", "CHACHA20-POLY1305": "ChaCha20Poly1305"}

# How gnutls-cli (its recv failing: "Error in the pull function") and s_client (errno 104)
# report a TCP reset.
RESET_SIGNS = re.compile(rb"pull function|reset by peer|errno=104|ECONNRESET")

# Variants (rows of the matrix besides the client).
DATA, KU, KU_REQ, MFL = "data", "KeyUpdate", "KeyUpdate (update_requested)", "max_fragment_length 512"
KU_VARIANTS = (KU, KU_REQ)

FAMILIES = {"gnutls": ("gnutls-cli",), "nss_botan": ("tstclnt", "botan"), "openssl": ("s_client", "python", "curl")}
# Inside User-Mode Linux every process start costs (seconds on a busy host): the kernel path runs
# every client against one proxy, one CA and one pair of backends.
FAMILIES["all"] = FAMILIES["gnutls"] + FAMILIES["nss_botan"] + FAMILIES["openssl"]
TOOLS = {"gnutls-cli": "gnutls-cli", "tstclnt": "tstclnt", "botan": "botan", "s_client": "openssl",
         "python": sys.executable, "curl": "curl"}
# Which rows each client has, and why a cell it cannot do is skipped.
ROWS = {
    "gnutls-cli": (DATA, KU, KU_REQ, MFL),
    "s_client": (DATA, KU, KU_REQ, MFL),
    "tstclnt": (DATA, KU),
    "botan": (DATA, KU),
    "python": (DATA, KU),
    "curl": (DATA, KU),
}
NO_KEY_UPDATE = {
    "tstclnt": "tstclnt (NSS 3.87) has no command to send a KeyUpdate",
    "botan": "Botan 2.19 speaks no TLS 1.3",
    "python": "Python's ssl module has no KeyUpdate call",
    "curl": "curl cannot send a KeyUpdate",
}
NO_TLS13 = {"botan": "Botan 2.19 speaks no TLS 1.3 (it came with Botan 3)"}


PACKAGES = {"gnutls-cli": "gnutls-bin", "tstclnt": "libnss3-tools", "botan": "botan", "s_client": "openssl",
            "curl": "curl"}


def client_versions(clients):
    """{client: version} for the report: the Debian package versions, asked in one dpkg-query
    (every process start counts inside User-Mode Linux)."""
    import ssl
    pkgs = [PACKAGES[c] for c in clients if c in PACKAGES]
    found = {}
    if pkgs:
        p = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version}\\n"] + pkgs, capture_output=True,
                           timeout=60)
        found = dict(line.split(" ", 1) for line in p.stdout.decode().splitlines() if " " in line)
    out = {}
    for c in clients:
        if c == "python":
            out[c] = "Python %s, %s" % (sys.version.split()[0], ssl.OPENSSL_VERSION)
        else:
            out[c] = "%s %s" % (PACKAGES[c], found.get(PACKAGES[c], "not installed"))
    return out


def kernel_release():
    return os.uname().release


def kernel_can_rekey():
    """Linux >= 6.14 installs a TLS 1.3 KeyUpdate's next key on a kTLS socket (TLS_RX/TLS_TX
    again after EKEYEXPIRED); older kernels refuse a second key. Told by `uname -r`."""
    m = re.match(r"(\d+)\.(\d+)", kernel_release())
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (6, 14)


def pattern(index, n):
    """n bytes of lines of hex (LINE bytes each, newline-terminated), different for every cell:
    text, so that no client takes a byte of it for one of its stdin commands."""
    out = bytearray()
    k = 0
    while len(out) < n:
        digest = hashlib.shake_256(b"ztp-interop %d %d" % (index, k)).hexdigest((LINE - 1) // 2 + 1)
        out += digest[:LINE - 1].encode() + b"\n"
        k += 1
    return bytes(out[:n])


class Cell:
    def __init__(self, client, variant, version, cipher):
        self.client, self.variant, self.version, self.cipher = client, variant, version, cipher
        self.index = self.size = None
        self.status, self.detail = "skip", ""
        # Not a cell of the matrix (shown as "-", not counted): TLS 1.2 has no KeyUpdate.
        self.not_applicable = variant in KU_VARIANTS and version == "1.2"
        self.skip_reason = self._skip_reason()

    def _skip_reason(self):
        if self.not_applicable:
            return "n/a"
        if self.version == "1.3" and self.client in NO_TLS13:
            return NO_TLS13[self.client]
        if self.variant in KU_VARIANTS and self.client in NO_KEY_UPDATE:
            return NO_KEY_UPDATE[self.client]
        return None

    def base(self, path):
        if self.client == "gnutls-cli" and path == "kernel":
            return UML_GNUTLS_BASE
        return SMALL_BASE if self.variant == MFL else BASE

    @property
    def payload(self):
        return pattern(self.index, self.size)

    def name(self):
        return "%s [%s] TLS %s %s" % (self.client, self.variant, self.version, self.cipher)

    def to_json(self):
        return {"client": self.client, "variant": self.variant, "version": self.version,
                "cipher": self.cipher, "status": self.status, "detail": self.detail}


def pipe_unread(pipe):
    """Bytes written to a pipe and not yet read (FIONREAD works on either end of a Linux pipe)."""
    n = array.array("i", [0])
    fcntl.ioctl(pipe.fileno(), termios.FIONREAD, n)
    return n[0]


class ClientProcess:
    """A client process with stdin piped and stdout/stderr collected by threads."""

    def __init__(self, argv, env=None, stdin=subprocess.PIPE, tty_stderr=False):
        """tty_stderr: stderr is a pseudo-terminal, so that what the client writes there through
        stdio is line-buffered (gnutls-cli's --logfile is an fopen()ed FILE: on a pipe it would
        only show at the exit)."""
        self.argv = [str(a) for a in argv]
        full_env = dict(os.environ)
        full_env.update(env or {})
        if tty_stderr:
            master, slave = pty.openpty()
            err_stream = os.fdopen(master, "rb", buffering=0)
        else:
            slave, err_stream = subprocess.PIPE, None
        try:
            self.p = subprocess.Popen(self.argv, stdin=stdin, stdout=subprocess.PIPE, stderr=slave, env=full_env)
        finally:
            if tty_stderr:
                os.close(slave)
        self.err_stream = err_stream
        self.io = PipeReaders(self.p.stdout, err_stream or self.p.stderr)
        self.out, self.err = self.io.bufs

    def write(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def wait(self, predicate, what, timeout=TIMEOUT):
        """Until predicate(stdout, stderr) holds; AssertionError naming `what` on exit or timeout."""
        deadline = time.monotonic() + timeout
        if not self.io.wait(predicate, deadline, lambda: self.p.poll() is not None):
            raise AssertionError("%s: %s\n%s" % (
                "timed out" if time.monotonic() >= deadline else "the client exited first", what, self.describe()))

    def finish(self, timeout=TIMEOUT):
        """Closes stdin (if piped) and waits for the exit; returns the exit code (killed: None)."""
        if self.p.stdin:
            try:
                self.p.stdin.close()
            except OSError:
                pass
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(10)
            rc = None
        self.io.join(10)
        if self.err_stream:
            self.err_stream.close()
        return rc

    def describe(self):
        rc = self.p.poll()
        return "command: %s\nexit: %s\nstdout (%d bytes): %r\nstderr (tail): %s" % (
            " ".join(self.argv), "running" if rc is None else describe_rc(rc), len(self.out),
            bytes(self.out[-200:]), bytes(self.err[-1500:]).decode("utf-8", "replace"))


class Run:
    """One proxy on one record path, and the clients of one family against it."""

    def __init__(self, path, family, work):
        self.path, self.family, self.work = path, family, work
        self.kernel = path == "kernel"
        self.ku_closes = self.kernel and not kernel_can_rekey()
        self.procs = []
        self.ca = CertAuthority(os.path.join(work, "pki"))
        self.leaf = self.ca.issue("localhost", "ec", dns=[NAME])

    # ---------------------------------------------------------------- set-up

    def start(self):
        clients = FAMILIES[self.family]
        # Only the backends this family's clients talk to (a Python process each).
        self.echo = self._keep(Backend("echo")) if set(clients) & {"gnutls-cli", "s_client", "botan", "python"} else None
        self.http = self._keep(Backend("http")) if set(clients) & {"tstclnt", "curl"} else None
        # On the kernel path "auto": a max_fragment_length session the kernel cannot bound goes
        # to the userspace path (with "kernel" it would be refused); every other one must be on
        # the kernel path, which the access lines are checked for.
        tls = {"record_path": "auto" if self.kernel else self.path, "alpn": None}
        cert = [("main", self.leaf, None)]
        names = [n for n, b in (("echo", self.echo), ("http", self.http)) if b]
        text = policy_toml(
            [{"name": n, "certs": cert, "tls": tls} for n in names],
            [{"name": n, "addresses": [getattr(self, n).address]} for n in names],
            [{"listener": n, "backend": n, "default": True} for n in names],
            sections={"admin": {"address": "127.0.0.1:0"}})
        policy = os.path.join(self.work, "policy.toml")
        with open(policy, "w") as f:
            f.write(text)
        self.proxy = self._keep(Proxy(["run", "-c", policy], listeners=len(names)))
        self.echo_port = self.proxy.port_of("echo") if self.echo else None
        self.http_port = self.proxy.port_of("http") if self.http else None
        self.admin = self.proxy.admin_address()
        if "tstclnt" in FAMILIES[self.family]:
            self.nss = self.nss_db()

    def _keep(self, proc):
        self.procs.append(proc)
        return proc

    def stop(self):
        for p in reversed(self.procs):
            p.stop()

    def nss_db(self):
        """An NSS certificate database that trusts the test CA (tstclnt verifies against it)."""
        db = os.path.join(self.work, "nssdb")
        if not os.path.isdir(db):
            os.makedirs(db)
            for argv in (["certutil", "-N", "-d", "sql:" + db, "--empty-password"],
                         ["certutil", "-A", "-d", "sql:" + db, "-n", "ztproxy-interop-ca", "-t", "C,,",
                          "-i", self.ca.cert]):
                p = subprocess.run(argv, capture_output=True, timeout=60)
                if p.returncode != 0:
                    raise AssertionError("%s: %s" % (" ".join(argv), p.stderr.decode("utf-8", "replace")))
        return "sql:" + db

    def file(self, name, data):
        path = os.path.join(self.work, name)
        with open(path, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        return path

    # ---------------------------------------------------------------- clients

    def exchange(self, client, cell, command=None, confirm=None, chunk=None, extract=lambda o: o,
                 trailer_ok=lambda rest: rest == b""):
        """Streams the cell's payload through an echo client and checks the echo, with a
        KeyUpdate half way for the KeyUpdate variants (command written, confirm(stderr) counts the
        client's report of having sent it). chunk: write at most that much at a time, each piece
        once the client has read the one before (gnutls-cli sends one record per read of its
        stdin, and with --recordsize=512 drops what does not fit)."""
        payload = cell.payload
        first = payload[:-TAIL] if command else payload

        def send(data):
            if not chunk:
                client.write(data)
                return
            # Each piece once the client has read the one before out of the pipe, so that no
            # read of its stdin gets more than `chunk` bytes. (Not once its echo is back:
            # gnutls-cli can sit in select() for seconds with a record already in its buffer.)
            for i in range(0, len(data), chunk):
                wait_until(lambda: pipe_unread(client.p.stdin) == 0, TIMEOUT, "the client reading its stdin")
                client.write(data[i:i + chunk])

        def echoed(want):
            return lambda o, _: len(extract(o)) >= len(want)

        send(first)
        client.wait(echoed(first), "the echo of %d bytes" % len(first))
        if extract(bytes(client.out))[:len(first)] != first:
            raise AssertionError("the echo differs from what was sent\n" + client.describe())
        if command:
            before = confirm(bytes(client.err))
            # Inside User-Mode Linux what a client writes to a pseudo-terminal can be lost (gnutls-cli's
            # --logfile shows nothing there, not even its handshake lines): there the proxy's own
            # count of KeyUpdates followed confirms it too. The run's final check still requires
            # that count to equal the number of KeyUpdate cells, and the client reads its stdin in
            # order, so the rest of the data always follows its KeyUpdate.
            followed = self.key_updates_followed() if IN_VM and not self.ku_closes else None
            client.write(command)
            # Where kTLS cannot rekey, the proxy's close may come before the client's report.
            client.wait(lambda _, e: confirm(e) > before or (self.ku_closes and client.p.poll() is not None)
                        or (followed is not None and self.key_updates_followed() > followed),
                        "the client's report that it sent its KeyUpdate")
            if self.ku_closes:
                # kTLS below Linux 6.14, the documented close (README "TLS 1.3 KeyUpdate on
                # kTLS"): the proxy ends the connection before reading past the KeyUpdate, orderly
                # (a FIN and no close_notify: backend bytes may have been cut off), never with a
                # reset. The client ends by itself, with its stdin still open.
                try:
                    client.p.wait(TIMEOUT)
                except subprocess.TimeoutExpired:
                    raise AssertionError("the proxy left the connection open after the KeyUpdate\n"
                                         + client.describe()) from None
                client.finish()
                if RESET_SIGNS.search(bytes(client.err)):
                    raise AssertionError("the client saw a reset, not an orderly close\n" + client.describe())
                if extract(bytes(client.out))[:len(first)] != first:
                    raise AssertionError("the echo before the KeyUpdate differs\n" + client.describe())
                cell.detail = ("the proxy ended the connection at the KeyUpdate (FIN, no close_notify, no reset), "
                               "close=key_update_unsupported: Linux %s < 6.14 cannot rekey kTLS" % kernel_release())
                return
            send(payload[len(first):])
            client.wait(echoed(payload), "the echo of all %d bytes after the KeyUpdate" % len(payload))
        rc = client.finish()
        got = extract(bytes(client.out))
        if rc != 0:
            raise AssertionError("the client exited with %s\n%s" % (describe_rc(rc) if rc is not None else "a kill after the timeout", client.describe()))
        if got[:len(payload)] != payload:
            raise AssertionError("the echo differs from what was sent\n" + client.describe())
        if not trailer_ok(got[len(payload):]):
            raise AssertionError("unexpected bytes after the echo: %r\n%s" % (got[len(payload):][:200], client.describe()))

    def key_updates_followed(self):
        return metric(scrape(self.admin)[1], "ztproxy_key_updates_total")

    def run_gnutls(self, cell):
        prio = "NORMAL:-VERS-ALL:+VERS-TLS%s:-CIPHER-ALL:+%s" % (cell.version, cell.cipher)
        argv = ["gnutls-cli", "127.0.0.1", "-p", self.echo_port, "--sni-hostname", NAME, "--verify-hostname", NAME,
                "--x509cafile", self.ca.cert, "--priority", prio, "--logfile", "/dev/stderr"]
        command = None
        if cell.variant in KU_VARIANTS:
            argv.append("--inline-commands")
            command = b"^rekey^\n" if cell.variant == KU else b"^rekey1^\n"
        if cell.variant == MFL:
            argv.append("--recordsize=512")
        c = ClientProcess(argv, tty_stderr=command is not None)
        self.exchange(c, cell, command, lambda e: e.count(b"Rekey was completed"),
                      chunk=512 if cell.variant == MFL else None)

    def run_s_client(self, cell):
        argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.echo_port, "-brief", "-servername", NAME,
                "-verify_hostname", NAME, "-CAfile", self.ca.cert, "-verify_return_error"]
        name = OPENSSL_NAME[(cell.version, cell.cipher)]
        argv += ["-tls1_3", "-ciphersuites", name] if cell.version == "1.3" else ["-tls1_2", "-cipher", name]
        if cell.variant == MFL:
            argv += ["-maxfraglen", "512"]
        # s_client takes "k" / "K" as the first byte of one read of its stdin: sent alone, after
        # the echo of everything before it (the payload is hex, never a command letter).
        command = {KU: b"k\n", KU_REQ: b"K\n"}.get(cell.variant)
        self.exchange(ClientProcess(argv), cell, command, lambda e: e.count(b"KEYUPDATE"))

    def run_botan(self, cell):
        policy = self.file("botan-%s.txt" % cell.cipher, "\n".join([
            "allow_tls10 = false", "allow_tls11 = false", "allow_tls12 = true",
            "allow_dtls10 = false", "allow_dtls12 = false", "ciphers = %s" % BOTAN_NAME[cell.cipher], ""]))
        # stdbuf: botan writes the echo to std::cout, which (synced with stdio) is fully buffered
        # on a pipe: line-buffered, every line of the echo shows as it arrives.
        argv = ["stdbuf", "-oL", "botan", "tls_client", NAME, "--port=%d" % self.echo_port, "--policy=" + policy,
                "--trusted-cas=" + self.ca.cert, "--skip-system-cert-store"]
        head = cell.payload[:LINE]

        # botan prints its handshake report on stdout before the data ("Handshake complete, ...")
        # and "EOF on stdin" after it: the echo starts at the payload's first line.
        def extract(out):
            i = out.find(head)
            return out[i:] if i >= 0 else b""

        self.exchange(ClientProcess(argv), cell, extract=extract,
                      trailer_ok=lambda rest: re.search(rb"^[0-9a-f]{8}", rest, re.M) is None)

    def http_request(self, cell):
        return (b"POST /echo-body HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (NAME.encode(), cell.size)) + cell.payload

    def run_tstclnt(self, cell):
        # tstclnt never closes by itself (at EOF of its input it waits for the server), so the
        # request says Connection: close: the backend closes after the answer, the proxy sends
        # close_notify, tstclnt exits. -A: the request from a file (at EOF of a piped stdin
        # tstclnt 3.87 spins and never exits).
        req = self.file("tstclnt-%d.http" % cell.index, self.http_request(cell))
        vers = "tls%s:tls%s" % (cell.version, cell.version)
        argv = ["tstclnt", "-h", "127.0.0.1", "-p", self.http_port, "-a", NAME, "-d", self.nss, "-V", vers,
                "-c", ":" + NSS_CODE[(cell.version, cell.cipher)], "-A", req]
        c = ClientProcess(argv, stdin=subprocess.DEVNULL)
        rc = c.finish()
        if rc != 0:
            raise AssertionError("tstclnt exited with %s\n%s" % (describe_rc(rc) if rc is not None else "a kill", c.describe()))
        self.check_http_answer(bytes(c.out), cell, c.describe())

    @staticmethod
    def check_http_answer(out, cell, where):
        head, sep, body = out.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"HTTP/1.1 200 "):
            raise AssertionError("no HTTP 200 answer\n" + where)
        m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        if not m or int(m.group(1)) != cell.size or body != cell.payload:
            raise AssertionError("the answer's body differs from the request's (%d of %d bytes)\n%s"
                                 % (len(body), cell.size, where))

    def run_curl(self, cell):
        body = self.file("curl-%d.in" % cell.index, cell.payload)
        out = os.path.join(self.work, "curl-%d.out" % cell.index)
        name = OPENSSL_NAME[(cell.version, cell.cipher)]
        argv = ["curl", "-sS", "--max-time", str(int(TIMEOUT)), "--cacert", self.ca.cert,
                "--resolve", "%s:%d:127.0.0.1" % (NAME, self.http_port),
                "https://%s:%d/echo-body" % (NAME, self.http_port), "--data-binary", "@" + body,
                "-H", "Content-Type: application/octet-stream", "-H", "Expect:", "-o", out, "-w", "%{http_code}",
                "--tlsv" + cell.version, "--tls-max", cell.version]
        argv += ["--tls13-ciphers", name] if cell.version == "1.3" else ["--ciphers", name]
        c = ClientProcess(argv, stdin=subprocess.DEVNULL)
        rc = c.finish(TIMEOUT + 15)
        if rc != 0 or bytes(c.out) != b"200":
            raise AssertionError("curl failed\n" + c.describe())
        with open(out, "rb") as f:
            if f.read() != cell.payload:
                raise AssertionError("curl: the answer's body differs from the request's")

    def run_python(self, cell):
        payload = self.file("py-%d.in" % cell.index, cell.payload)
        out = os.path.join(self.work, "py-%d.out" % cell.index)
        name = OPENSSL_NAME[(cell.version, cell.cipher)]
        env = {}
        if cell.version == "1.3":
            conf = self.file("openssl-%s.cnf" % cell.cipher, "\n".join([
                "openssl_conf = conf", "[conf]", "ssl_conf = ssl", "[ssl]", "system_default = sys",
                "[sys]", "Ciphersuites = %s" % name, ""]))
            env["OPENSSL_CONF"] = conf
        # -S: no site module (a faster start; the client needs the standard library only).
        argv = [sys.executable, "-S", os.path.join(HERE, "py_client.py"), self.echo_port, NAME, self.ca.cert,
                cell.version, name if cell.version == "1.2" else "", payload, out]
        c = ClientProcess(argv, env=env, stdin=subprocess.DEVNULL)
        rc = c.finish()
        if rc != 0:
            raise AssertionError("the Python client failed\n" + c.describe())
        with open(out, "rb") as f:
            if f.read() != cell.payload:
                raise AssertionError("python: the echo differs from what was sent\n" + c.describe())

    RUNNERS = {"gnutls-cli": run_gnutls, "s_client": run_s_client, "botan": run_botan,
               "tstclnt": run_tstclnt, "curl": run_curl, "python": run_python}

    # ---------------------------------------------------------------- checks

    def expected_close(self, cell):
        if cell.variant in KU_VARIANTS and self.ku_closes:
            return "key_update_unsupported"
        return "backend_close" if cell.client == "tstclnt" else "client_close"

    def entry_for(self, cell, entries):
        http = cell.client in ("tstclnt", "curl")
        sent = cell.size - (TAIL if cell.variant in KU_VARIANTS and self.ku_closes else 0)
        match = [e for e in entries if isinstance(e.get("bytes_up"), int)
                 and (sent <= e["bytes_up"] < sent + HTTP_HEAD if http else e["bytes_up"] == sent)]
        if len(match) != 1:
            raise AssertionError("%d access lines with bytes_up %s %d (expected one)"
                                 % (len(match), "in the window from" if http else "=", sent))
        return match[0]

    def check_entry(self, cell, e):
        want_version = "TLSv" + cell.version
        want_cipher = OPENSSL_NAME[(cell.version, cell.cipher)]
        if (e.get("version"), e.get("cipher")) != (want_version, want_cipher):
            raise AssertionError("negotiated %s %s, expected %s %s: %r"
                                 % (e.get("version"), e.get("cipher"), want_version, want_cipher, e))
        if e.get("close") != self.expected_close(cell):
            raise AssertionError("close=%s, expected %s: %r" % (e.get("close"), self.expected_close(cell), e))
        paths = (e.get("rx_path"), e.get("tx_path"))
        if not self.kernel:
            want = (self.path, self.path)
        elif cell.variant == MFL and e.get("ktls_fallback") == "max_fragment_length":
            # Documented: a kernel that cannot bound kTLS TX records leaves such a session to the
            # userspace path (README "max_fragment_length").
            want = ("userspace", "userspace")
            cell.detail = "on the userspace path (ktls_fallback=max_fragment_length): this kernel cannot bound kTLS TX records"
        else:
            want = ("kernel", "kernel")
        if paths != want:
            raise AssertionError("record paths %s, expected %s: %r" % (paths, want, e))


def run_matrix(path, family, jobs, results_file, only=None):
    clients = FAMILIES[family]
    cells = [Cell(c, v, ver, ci) for c in clients for v in ROWS[c] for ver in VERSIONS for ci in CIPHERS]
    if only:
        cells = [c for c in cells if re.search(only, c.name())]
    # The small cells first, so that they keep their small sizes (see BASE).
    live = sorted((c for c in cells if not c.skip_reason), key=lambda c: (c.base(path), c.variant != MFL))
    size = 0
    for i, c in enumerate(live):
        c.index = i
        c.size = size = max(c.base(path), size + STRIDE)
    missing = sorted({TOOLS[c] for c in clients if shutil.which(TOOLS[c]) is None})
    versions = client_versions(clients)
    work = tempfile.mkdtemp(prefix="ztp-interop-%s-%s-" % (family, path))
    started = time.monotonic()
    run = Run(path, family, work)
    failures = []
    try:
        if missing:
            raise AssertionError("not installed: %s (deploy/install-build-deps.sh installs them)"
                                 % ", ".join(missing))
        run.start()
        print("set-up (certificates, backends, proxy) in %.1f s" % (time.monotonic() - started), flush=True)

        def one(cell):
            t0 = time.monotonic()
            try:
                Run.RUNNERS[cell.client](run, cell)
                cell.status = "pass"
            except Exception as ex:  # a failed cell is reported, the others go on
                cell.status, cell.detail = "fail", "%s: %s" % (type(ex).__name__, ex)
            print("cell done: %s: %s in %.1f s" % (cell.name(), cell.status, time.monotonic() - t0), flush=True)

        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, live))
        # Every connection has its access line; each cell's is found by its bytes_up.
        entries = run.proxy.wait_access(count=len(live), what="(one per cell)", timeout=TIMEOUT)
        for cell in live:
            try:
                e = run.entry_for(cell, entries)
            except AssertionError as ex:
                e, why = None, str(ex)
            if cell.status != "pass":  # what the proxy says about a failed cell's connection
                cell.detail += "\naccess line: %r" % (e if e else why)
                continue
            try:
                if e is None:
                    raise AssertionError(why)
                run.check_entry(cell, e)
            except AssertionError as ex:
                cell.status, cell.detail = "fail", "access log: %s" % ex
        failures += counter_checks(run, live)
        if not run.proxy.alive():
            failures.append("ztproxy exited during the run\n" + run.proxy.diag())
        if failures or any(c.status == "fail" for c in live):
            print(run.proxy.diag(n=60), flush=True)
    except AssertionError as ex:
        failures.append(str(ex))
    finally:
        run.stop()
        shutil.rmtree(work, True)
    for c in cells:
        if c.not_applicable:
            c.status, c.detail = "n/a", ""
        elif c.skip_reason:
            c.status, c.detail = "skip", c.skip_reason
    result = {"path": path, "family": family, "kernel": kernel_release(), "clients": versions,
              "seconds": round(time.monotonic() - started, 1), "cells": [c.to_json() for c in cells],
              "failures": failures}
    if results_file:
        os.makedirs(os.path.dirname(os.path.abspath(results_file)), exist_ok=True)
        with open(results_file, "w") as f:
            json.dump(result, f, indent=1)
    return result


def counter_checks(run, live):
    """The KeyUpdate counters against the KeyUpdate cells that ran (all of them, passed or not)."""
    ku = sum(1 for c in live if c.variant in KU_VARIANTS)
    if not ku:
        return []
    status, text = scrape(run.admin)
    if status != 200:
        return ["/metrics answered %d" % status]
    if run.ku_closes:
        got = metric(text, "ztproxy_ktls_key_update_closes_total")
        what = "ztproxy_ktls_key_update_closes_total"
    elif run.path == "openssl":
        return []  # OpenSSL follows KeyUpdates itself there: the counter is the record layers'
    else:
        got = metric(text, "ztproxy_key_updates_total")
        what = "ztproxy_key_updates_total"
    return [] if got == ku else ["%s = %g, expected %d (one per KeyUpdate cell)" % (what, got, ku)]


# -------------------------------------------------------------------- report

SYMBOL = {"fail": "**FAIL**", "n/a": "-"}


def markdown(results):
    """The matrix: one row per client x variant, one column per version x cipher, one table per
    record path; skipped cells carry a footnote number with their reason."""
    out = []
    notes = []
    by_path = {}
    for r in results:
        by_path.setdefault(r["path"], []).append(r)
    clients = {}
    for r in results:
        clients.update(r["clients"])
    out.append("Clients: " + "; ".join("%s (%s)" % (c, v) for c, v in sorted(clients.items())) + ".")
    out.append("")
    for path in ("userspace", "openssl", "kernel"):
        runs = by_path.get(path)
        if not runs:
            continue
        cells = [c for r in runs for c in r["cells"]]
        counts = {s: sum(1 for c in cells if c["status"] == s) for s in ("pass", "skip", "fail")}
        kernels = sorted({r["kernel"] for r in runs})
        out.append("**%s path** (%s; Linux %s): %d passed, %d skipped, %d failed, %s s" % (
            path, "kTLS kernel" if path == "kernel" else "host", ", ".join(kernels), counts["pass"],
            counts["skip"], counts["fail"], " + ".join(str(r["seconds"]) for r in runs)))
        out.append("")
        cols = [(v, c) for v in VERSIONS for c in CIPHERS]
        out.append("| client | variant | " + " | ".join("TLS %s %s" % vc for vc in cols) + " |")
        out.append("|---|---|" + "---|" * len(cols))
        rows = []
        for c in cells:
            if (c["client"], c["variant"]) not in rows:
                rows.append((c["client"], c["variant"]))
        for client, variant in rows:
            line = []
            for v, ci in cols:
                found = [x for x in cells if (x["client"], x["variant"], x["version"], x["cipher"]) == (client, variant, v, ci)]
                if not found:  # a run with --only
                    line.append("")
                    continue
                c = found[0]
                text = SYMBOL.get(c["status"], c["status"])
                if c["detail"] and c["status"] != "fail":
                    if c["detail"] not in notes:
                        notes.append(c["detail"])
                    text += " (%d)" % (notes.index(c["detail"]) + 1)
                line.append(text)
            out.append("| %s | %s | %s |" % (client, variant, " | ".join(line)))
        out.append("")
    out += ["`-`: not applicable (TLS 1.2 has no KeyUpdate). Notes:", ""] + ["%d. %s" % (i + 1, n) for i, n in enumerate(notes)]
    return "\n".join(out) + "\n"


def print_result(r):
    for c in r["cells"]:
        if c["status"] == "n/a":
            continue
        print("%-4s %s [%s] TLS %s %s%s" % (c["status"].upper(), c["client"], c["variant"], c["version"], c["cipher"],
                                            ": " + c["detail"] if c["detail"] else ""))
    for f in r["failures"]:
        print("FAIL " + f)
    n = {s: sum(1 for c in r["cells"] if c["status"] == s) for s in ("pass", "skip", "fail")}
    print("interop %s on the %s path (Linux %s): %d passed, %d skipped, %d failed cells, %d other failures, %.1f s"
          % (r["family"], r["path"], r["kernel"], n["pass"], n["skip"], n["fail"], len(r["failures"]), r["seconds"]))
    return n["fail"] == 0 and not r["failures"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", choices=("userspace", "openssl", "kernel"))
    ap.add_argument("--family", choices=sorted(FAMILIES))
    ap.add_argument("--results", help="write the cells as JSON here")
    ap.add_argument("--only", metavar="REGEX", help="only the cells whose name matches (to debug one)")
    ap.add_argument("--markdown", nargs="+", metavar="RESULTS", help="print the README table of these results")
    args = ap.parse_args()
    if args.markdown:
        results = []
        for p in args.markdown:
            with open(p) as f:
                results.append(json.load(f))
        sys.stdout.write(markdown(results))
        return 0
    if not args.path or not args.family:
        ap.error("--path and --family (or --markdown)")
    if args.path == "kernel":
        from test_ktls_e2e import ktls_status
        ok, why = ktls_status()
        if not ok:
            if os.environ.get("KTLS_VM_GUEST"):
                print("FAIL: inside the kTLS VM but kTLS is unavailable: %s" % why)
                return 1
            print("SKIP: the kernel record path needs kTLS (%s); this test runs inside "
                  "tests/ktls/run-in-ktls-kernel.sh (ctest -R ktls_vm_suite)" % why)
            return SKIP
    jobs = int(os.environ.get("ZTP_INTEROP_JOBS") or 6)
    r = run_matrix(args.path, args.family, jobs, args.results, args.only)
    ok = print_result(r)
    print()
    sys.stdout.write(markdown([r]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
