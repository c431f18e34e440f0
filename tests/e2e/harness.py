"""Shared helpers for the ztproxy e2e tests (Python 3 stdlib only).

What is here:
  * certificates made with the `openssl` CLI: a CA and ECDSA P-256 / RSA-2048 leaves with SANs;
  * processes (the backend, ztproxy) with their stdout/stderr read by threads into line lists, so
    tests wait on what a process printed (bounded, with the stderr tail in the failure message)
    and never sleep-and-hope;
  * guaranteed teardown: every process is registered with the test's cleanups and, as a last
    resort, with atexit; stop() is SIGTERM, bounded wait, SIGKILL, wait;
  * clients: curl, `openssl s_client` (bounded), Python ssl sockets with a small HTTP/1.1 reader;
  * policy files written from Python structures;
  * the access-log parser (text key=value and JSON).

Environment: ZTPROXY_BIN (the binary; default $ZTP_SOURCE_DIR/build/ztproxy), ZTP_SOURCE_DIR,
ZTP_E2E_VERBOSE=1 prints every process's output at teardown.
Port 0 everywhere: the proxy reports its real ports on stderr ("listening on ADDR:PORT"), the
backend on stdout ("LISTENING PORT").
"""

import atexit
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("ZTP_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
BACKEND_PY = os.path.join(HERE, "backend.py")
VERBOSE = os.environ.get("ZTP_E2E_VERBOSE") == "1"

READY_TIMEOUT = 20.0    # a process printing its readiness line
EVENT_TIMEOUT = 20.0    # a log line / backend event that must follow something the test did
STOP_TIMEOUT = 5.0      # SIGTERM -> exit, before SIGKILL

# "listener 'main' listening on 127.0.0.1:41235". `ztproxy demo` also logs "demo backend
# listening on ...": that one is not a proxy listener.
LISTEN_RE = re.compile(r"(?<!backend )listening on (\S+):(\d+)$")
LISTENER_NAME_RE = re.compile(r"listener '([^']+)'")


def log_message(line):
    """The message of a log line: the "msg" of a JSON line (--log-format json), else the line."""
    s = line.strip()
    if s.startswith("{"):
        try:
            d = json.loads(s)
            if isinstance(d, dict) and isinstance(d.get("msg"), str):
                return d["msg"]
        except ValueError:
            pass
    return s


def find_listen(line):
    return LISTEN_RE.search(log_message(line))


def ztproxy_bin():
    """The binary under test. Unset ZTPROXY_BIN and no build -> the test is skipped."""
    explicit = os.environ.get("ZTPROXY_BIN")
    path = explicit or os.path.join(SOURCE_DIR, "build", "ztproxy")
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    if explicit:
        raise AssertionError("ZTPROXY_BIN=%s is not an executable file" % explicit)
    raise unittest.SkipTest("no ztproxy binary (set ZTPROXY_BIN; looked at %s)" % path)


def require_tool(name):
    if shutil.which(name) is None:
        raise unittest.SkipTest("%s is not installed" % name)


# --------------------------------------------------------------------------------------------
# Processes


class LineCollector:
    """Reads a pipe line by line on a thread; lines are kept (decoded, without newline)."""

    def __init__(self, pipe, label):
        self.label = label
        self.lines = []
        self.closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(pipe,), daemon=True,
                                        name="reader-" + label)
        self._thread.start()

    def _run(self, pipe):
        try:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def snapshot(self):
        with self._cond:
            return list(self.lines)

    def wait_for(self, predicate, timeout, start=0):
        """Waits until predicate(line) is truthy for a line at index >= start.

        Returns (index, predicate result), or None on timeout or when the pipe closed first.
        """
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    r = predicate(self.lines[i])
                    if r:
                        return i, r
                    i += 1
                if self.closed:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def join(self, timeout=5.0):
        self._thread.join(timeout)


_live_processes = set()
_live_lock = threading.Lock()


@atexit.register
def _kill_leftovers():
    with _live_lock:
        procs = list(_live_processes)
    for p in procs:
        p.kill()


class Proc:
    """A child process with its output collected. Use stop() (or the test's cleanup) to end it."""

    def __init__(self, label, argv, env=None, cwd=None, pass_fds=()):
        self.label = label
        self.argv = [str(a) for a in argv]
        self.stopped = False
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=full_env, cwd=cwd,
                                      pass_fds=pass_fds)
        with _live_lock:
            _live_processes.add(self)
        self.out = LineCollector(self.popen.stdout, label + ".stdout")
        self.err = LineCollector(self.popen.stderr, label + ".stderr")

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def diag(self, n=40):
        """Exit status and the tails of both streams, for failure messages."""
        rc = self.popen.poll()
        status = "running" if rc is None else "exited with %s" % describe_rc(rc)
        parts = ["%s (%s), command: %s" % (self.label, status, " ".join(self.argv))]
        for name, col in (("stderr", self.err), ("stdout", self.out)):
            lines = col.snapshot()
            tail = lines[-n:]
            parts.append("--- %s (last %d of %d lines) ---" % (name, len(tail), len(lines)))
            parts.extend(tail)
        return "\n".join(parts)

    def wait_line(self, stream, regex, timeout=EVENT_TIMEOUT, start=0, what=None):
        """Waits for a line matching regex on 'stdout' or 'stderr'; returns the match object."""
        col = self.out if stream == "stdout" else self.err
        rx = re.compile(regex) if isinstance(regex, str) else regex
        r = col.wait_for(rx.search, timeout, start)
        if r is None:
            why = self._why_not(col, timeout)
            raise AssertionError("%s: no %s line matching %r (%s)\n%s" % (
                self.label, stream, rx.pattern, why if what is None else what + "; " + why,
                self.diag()))
        return r[1]

    def _why_not(self, col, timeout):
        """Why a wait on `col` found nothing: the process ended (reaped here, so that diag()
        shows the exit status) or the wait timed out."""
        if col.closed or not self.alive():
            self.wait_exit(5)
            return "process ended first"
        return "timed out after %.0fs" % timeout

    def send_signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def wait_exit(self, timeout):
        """Waits for the process to end; returns the exit code or None on timeout."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.popen.poll() is None:
            try:
                self.popen.kill()
            except OSError:
                pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._finish()

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """SIGTERM, bounded wait, SIGKILL. Returns (exit code, whether SIGKILL was needed)."""
        if self.stopped:
            return self.popen.returncode, False
        self.stopped = True
        killed = False
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            if self.wait_exit(timeout) is None:
                killed = True
                self.popen.kill()
                self.popen.wait(10)
        self._finish()
        return self.popen.returncode, killed

    def _finish(self):
        self.out.join()
        self.err.join()
        for f in (self.popen.stdout, self.popen.stderr):
            try:
                f.close()
            except OSError:
                pass
        with _live_lock:
            _live_processes.discard(self)
        if VERBOSE:
            sys.stderr.write("\n" + self.diag(n=10 ** 6) + "\n")


def describe_rc(rc):
    if rc is not None and rc < 0:
        try:
            return "signal %s" % signal.Signals(-rc).name
        except ValueError:
            return "signal %d" % -rc
    return "code %s" % rc


class Backend(Proc):
    """backend.py in 'http', 'echo' or 'record' mode; .port is its listening port. With
    proxy_protocol="v2" it expects (and reports) a PROXY v2 header on every connection."""

    def __init__(self, mode="http", proxy_protocol=None):
        argv = [sys.executable, BACKEND_PY, "--mode", mode]
        if proxy_protocol:
            argv += ["--proxy-protocol", proxy_protocol]
        super().__init__("backend(%s)" % mode, argv)
        try:
            m = self.wait_line("stdout", r"^LISTENING (\d+)$", READY_TIMEOUT,
                               what="backend readiness")
        except BaseException:
            self.kill()  # no cleanup is registered for a process that never became ready
            raise
        self.port = int(m.group(1))
        self.address = "127.0.0.1:%d" % self.port

    def events(self, prefix):
        return [l for l in self.out.snapshot() if l.startswith(prefix)]

    def wait_event(self, regex, timeout=EVENT_TIMEOUT, start=0):
        return self.wait_line("stdout", regex, timeout, start)


class Proxy(Proc):
    """ztproxy with the given arguments; waits until `listeners` listeners reported their port.

    .listeners maps listener name (if the log line names it) to port; .ports lists the ports in
    the order they were reported; .port is the first one.
    """

    def __init__(self, args, listeners=1, log_level="info", env=None, cwd=None,
                 label="ztproxy", exec_prefix=(), pass_fds=()):
        # exec_prefix: a command that execs ztproxy in the same process (e.g. setpriv ... --).
        # pass_fds: descriptors it inherits (socket activation).
        argv = list(exec_prefix) + [ztproxy_bin()] + list(args)
        if log_level and "--log-level" not in argv:
            argv += ["--log-level", log_level]
        super().__init__(label, argv, env=env, cwd=cwd, pass_fds=pass_fds)
        try:
            self._wait_ready(listeners)
        except BaseException:
            self.kill()  # no cleanup is registered for a process that never became ready
            raise

    def _wait_ready(self, listeners):
        self.ports = []
        self.listeners = {}
        start = 0
        for _ in range(listeners):
            r = self.err.wait_for(find_listen, READY_TIMEOUT, start)
            if r is None:
                why = self._why_not(self.err, READY_TIMEOUT)
                raise AssertionError("ztproxy did not report %d listening line(s), got %d (%s)\n%s"
                                     % (listeners, len(self.ports), why, self.diag()))
            idx, m = r
            port = int(m.group(2))
            self.ports.append(port)
            name = LISTENER_NAME_RE.search(log_message(self.err.snapshot()[idx]))
            if name:
                self.listeners[name.group(1)] = port
            start = idx + 1
        self.port = self.ports[0]

    def admin_address(self):
        """host:port of the admin endpoint (--admin / [admin]), from its start-up line."""
        return self.wait_line("stderr", r"admin endpoint on (\S+:\d+)").group(1)

    def port_of(self, listener):
        if listener not in self.listeners:
            raise AssertionError("no listening line named listener %r (have %r)\n%s"
                                 % (listener, self.listeners, self.diag()))
        return self.listeners[listener]

    def access_entries(self):
        """Every access-log entry so far (parsed once per line: waits re-read often)."""
        if not hasattr(self, "_parsed"):
            self._parsed, self._parsed_upto = [], 0
        lines = self.out.snapshot()
        for line in lines[self._parsed_upto:]:
            e = parse_access_line(line)
            if e is not None:
                self._parsed.append(e)
        self._parsed_upto = len(lines)
        return list(self._parsed)

    def wait_access(self, predicate=lambda e: True, count=1, timeout=EVENT_TIMEOUT, what=""):
        """Waits until `count` access entries satisfy predicate; returns them (all matching)."""
        deadline = time.monotonic() + timeout
        while True:
            matching = [e for e in self.access_entries() if predicate(e)]
            if len(matching) >= count:
                for e in matching:
                    if FORCED_RECORD_PATH and e.get("rx_path"):
                        assert (e["rx_path"], e["tx_path"]) == (FORCED_RECORD_PATH,) * 2, \
                            "record path %s forced, access entry says otherwise: %r" % (FORCED_RECORD_PATH, e)
                return matching
            left = deadline - time.monotonic()
            if left <= 0 or not self.alive() or self.out.closed:
                raise AssertionError(
                    "expected %d access-log entr%s %s, found %d; all entries:\n%s\n%s" % (
                        count, "y" if count == 1 else "ies", what, len(matching),
                        "\n".join(repr(e) for e in self.access_entries()), self.diag()))
            # Block until a line arrives after the ones just parsed (or the deadline). Waiting
            # from the parsed count, not a fresh snapshot, so a line that came in meanwhile
            # ends the wait at once instead of being missed.
            self.out.wait_for(lambda l: True, left, start=self._parsed_upto)


# --------------------------------------------------------------------------------------------
# Access log


_TOKEN_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_INT_FIELDS = ("worker", "bytes_up", "bytes_down", "spliced_up", "spliced_down", "copied_up", "copied_down", "duration_ms")


def _unquote(v):
    if not v.startswith('"'):
        return v
    body = v[1:-1]
    return re.sub(r'\\x([0-9a-fA-F]{2})|\\(.)',
                  lambda m: chr(int(m.group(1), 16)) if m.group(1) else m.group(2), body)


def parse_access_line(line):
    """A dict for an access-log line (text key=value or JSON), None for anything else."""
    s = line.strip()
    d = None
    if s.startswith("{"):
        try:
            d = json.loads(s)
        except ValueError:
            return None
        if not isinstance(d, dict):
            return None
    else:
        d = {k: _unquote(v) for k, v in _TOKEN_RE.findall(s)}
    if "close" not in d or "client" not in d:
        return None
    for k in _INT_FIELDS:
        if k in d:
            try:
                d[k] = int(d[k])
            except (TypeError, ValueError):
                pass
    return d


# --------------------------------------------------------------------------------------------
# Certificates


def run_checked(argv, timeout=60, input=None):
    p = subprocess.run([str(a) for a in argv], capture_output=True, timeout=timeout, input=input)
    if p.returncode != 0:
        raise AssertionError("command failed (%s): %s\nstderr:\n%s" % (
            describe_rc(p.returncode), " ".join(map(str, argv)),
            p.stderr.decode("utf-8", "replace")))
    return p


class Leaf:
    def __init__(self, name, cert, key, key_type, dns, ips):
        self.name, self.cert, self.key = name, cert, key
        self.key_type, self.dns, self.ips = key_type, list(dns), list(ips)

    def __repr__(self):
        return "Leaf(%s, %s, dns=%s)" % (self.name, self.key_type, self.dns)


class CertAuthority:
    """A throwaway CA (ECDSA P-256) in `directory`, issuing ECDSA P-256 or RSA-2048 leaves."""

    def __init__(self, directory, name="ztproxy e2e CA"):
        require_tool("openssl")
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.cert = os.path.join(directory, "ca.pem")
        self.key = os.path.join(directory, "ca.key")
        cnf = self._write("ca.cnf", "\n".join([
            "[req]", "distinguished_name = dn", "prompt = no", "x509_extensions = v3_ca",
            "[dn]", "O = ztproxy tests", "CN = %s" % name,
            "[v3_ca]", "basicConstraints = critical,CA:TRUE",
            "keyUsage = critical,keyCertSign,cRLSign", "subjectKeyIdentifier = hash", ""]))
        run_checked(["openssl", "req", "-x509", "-config", cnf, "-newkey", "ec",
                     "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.key,
                     "-out", self.cert, "-days", "2", "-sha256"])

    def _write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def issue(self, name, key_type="ec", dns=("localhost",), ips=("127.0.0.1",), cn=None,
              eku="serverAuth"):
        """Writes NAME.pem / NAME.key signed by this CA; SANs from dns and ips (none when both
        are empty); eku="clientAuth" for client certificates (mTLS)."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".pem")
        if key_type == "ec":
            run_checked(["openssl", "genpkey", "-algorithm", "EC",
                         "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key])
            usage = "digitalSignature"
        elif key_type == "rsa":
            run_checked(["openssl", "genpkey", "-algorithm", "RSA",
                         "-pkeyopt", "rsa_keygen_bits:2048", "-out", key])
            usage = "digitalSignature,keyEncipherment"
        else:
            raise ValueError(key_type)
        os.chmod(key, 0o600)
        sans = ["DNS:%s" % d for d in dns] + ["IP:%s" % i for i in ips]
        cnf = self._write(name + ".cnf", "\n".join([
            "[req]", "distinguished_name = dn", "prompt = no", "[dn]",
            "O = ztproxy tests", "CN = %s" % (cn or (dns[0] if dns else name)),
            "[v3_leaf]", "basicConstraints = critical,CA:FALSE",
            "keyUsage = critical,%s" % usage, "extendedKeyUsage = %s" % eku,
            "subjectKeyIdentifier = hash", "authorityKeyIdentifier = keyid"] +
            (["subjectAltName = %s" % ",".join(sans)] if sans else []) + [""]))
        run_checked(["openssl", "req", "-new", "-config", cnf, "-key", key, "-out", csr])
        run_checked(["openssl", "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                     "-set_serial", "0x" + secrets.token_hex(16), "-days", "2", "-sha256",
                     "-extfile", cnf, "-extensions", "v3_leaf", "-out", cert])
        return Leaf(name, cert, key, key_type, dns, ips)


# --------------------------------------------------------------------------------------------
# Policy files


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    raise TypeError(type(v))


# CTest runs the suite once per record path: set, every policy and quick-mode proxy is forced onto
# it, and every access line of a relayed connection must name it.
FORCED_RECORD_PATH = os.environ.get("ZTP_E2E_RECORD_PATH") or None


def policy_toml(listeners, backends, routes, sections=None):
    """Renders a policy.

    listeners: [{"name", "address" (default 127.0.0.1:0), "certs": [(name, Leaf, server_names)],
                 optional "tls": {min_version, max_version, ciphers, alpn, ...}}]
    backends:  [{"name", "addresses": [...], optional "proxy_protocol": "v2"}]
    routes:    [{"backend", "default": True | "server_names": [...], optional "listener"}]
    sections:  {"limits": {...}, "runtime": {...}, "logging": {...}} (plain key = value tables)
    """
    out = []
    for sec, kv in (sections or {}).items():
        out.append("[%s]" % sec)
        out.extend("%s = %s" % (k, _toml(v)) for k, v in kv.items())
        out.append("")
    for l in listeners:
        out += ["[[listener]]", "name = %s" % _toml(l["name"]),
                "address = %s" % _toml(l.get("address", "127.0.0.1:0")), "  [listener.tls]"]
        tls = {"alpn": ["http/1.1"]}
        if FORCED_RECORD_PATH:
            tls["record_path"] = FORCED_RECORD_PATH
        tls.update(l.get("tls", {}))
        out.extend("  %s = %s" % (k, _toml(v)) for k, v in tls.items() if v is not None)
        for cname, leaf, names in l["certs"]:
            out += ["  [[listener.tls.certificate]]", "  name = %s" % _toml(cname),
                    "  cert = %s" % _toml(leaf.cert), "  key = %s" % _toml(leaf.key)]
            if names:
                out.append("  server_names = %s" % _toml(list(names)))
        out.append("")
    for b in backends:
        out += ["[[backend]]", "name = %s" % _toml(b["name"]),
                "addresses = %s" % _toml(list(b["addresses"]))]
        if b.get("proxy_protocol"):
            out.append("proxy_protocol = %s" % _toml(b["proxy_protocol"]))
        out.append("")
    for r in routes:
        out.append("[[route]]")
        if r.get("listener"):
            out.append("listener = %s" % _toml(r["listener"]))
        if r.get("server_names"):
            out.append("server_names = %s" % _toml(list(r["server_names"])))
        else:
            out.append("default = true")
        out += ["backend = %s" % _toml(r["backend"]), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Clients


def dead_port():
    """A loopback port where nothing listens (bound, then closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def client_context(cafile, minimum=None, maximum=None, ciphers=None, alpn=None,
                   check_hostname=True):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = check_hostname
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    if ciphers:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_connect(port, server_name, cafile, timeout=15.0, ctx=None, **ctx_kw):
    """A connected, handshaken TLS socket (SNI = server_name unless it is an IP address).

    suppress_ragged_eofs=False: a TCP EOF without close_notify raises SSLEOFError, so tests can
    tell a clean TLS close from a dropped connection.
    """
    ctx = ctx or client_context(cafile, **ctx_kw)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_name, suppress_ragged_eofs=False)
    except BaseException:
        raw.close()
        raise


def recv_up_to(sock, n, timeout=None):
    """Up to n bytes from sock: fewer when the peer closes or nothing arrives for `timeout`
    seconds (default: the socket's own timeout). The caller asserts on what came."""
    if timeout is not None:
        sock.settimeout(timeout)
    got = b""
    try:
        while len(got) < n:
            d = sock.recv(n - len(got))
            if not d:
                break
            got += d
    except socket.timeout:
        pass
    return got


def set_linger_reset(sock):
    """Makes close() send an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


class HttpResponse:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def json(self):
        return json.loads(self.body.decode())


class HttpConn:
    """Minimal HTTP/1.1 client over an already connected (TLS) socket, Content-Length framing."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(256 * 1024)
        if not data:
            raise EOFError("connection closed while reading a response")
        self.buf += data

    def request(self, method, path, host, body=None, headers=None):
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host]
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Length", str(len(body)))
        lines += ["%s: %s" % kv for kv in hdrs.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.head_len = len(head) + 4  # bytes on the wire, for exact byte-count checks
        lines = head.decode("iso-8859-1").split("\r\n")
        _, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
        return int(status), reason, headers

    def read_body_chunks(self, length, chunk=256 * 1024):
        """Yields the body in pieces without holding it all."""
        left = length
        while left > 0:
            if not self.buf:
                self._fill()
            piece, self.buf = self.buf[:left], self.buf[left:]
            left -= len(piece)
            yield piece

    def response(self):
        status, reason, headers = self.read_head()
        n = int(headers.get("content-length", "0"))
        body = b"".join(self.read_body_chunks(n))
        return HttpResponse(status, reason, headers, body)


def file_size_and_sha256(path):
    """(size, sha256 hex) of a file, read in 1 MiB blocks: the check for what a client received."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def curl(args, timeout=60):
    """Runs curl -sS with bounded time; returns CompletedProcess (stdout/stderr bytes)."""
    require_tool("curl")
    argv = ["curl", "-sS", "--connect-timeout", "10", "--max-time", str(int(timeout))] + \
        [str(a) for a in args]
    return subprocess.run(argv, capture_output=True, timeout=timeout + 15)


def curl_args(name, port, path="/", cafile=None):
    """--resolve so that curl sends SNI `name` and connects to 127.0.0.1:port."""
    a = ["--resolve", "%s:%d:127.0.0.1" % (name, port), "https://%s:%d%s" % (name, port, path)]
    if cafile:
        a = ["--cacert", cafile] + a
    return a


# ---------------------------------------------------------------- the admin endpoint

def scrape(addr, path="/metrics", method="GET"):
    """(status, body) of the admin endpoint, fetched with curl as an operator would."""
    require_tool("curl")
    p = subprocess.run(["curl", "-sS", "--max-time", "30", "-X", method, "-w", "\n%{http_code}",
                        "http://%s%s" % (addr, path)], capture_output=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError("curl %s%s: %s" % (addr, path, p.stderr.decode(errors="replace")))
    body, _, status = p.stdout.decode().rpartition("\n")
    return int(status), body


def metric(text, name, **labels):
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", line)
        if m and m.group(1) == name and (m.group(2) or "") == want:
            return float(m.group(3))
    raise AssertionError("no metric %s{%s} in:\n%s" % (name, want, text))


class SClientResult:
    def __init__(self, argv, returncode, stdout, stderr, timed_out):
        self.argv, self.returncode = argv, returncode
        self.stdout, self.stderr, self.timed_out = stdout, stderr, timed_out
        m = re.search(r"^Protocol version: (\S+)", stderr, re.M)
        self.protocol = m.group(1) if m else None
        m = re.search(r"^Ciphersuite: (\S+)", stderr, re.M)
        self.cipher = m.group(1) if m else None

    def describe(self):
        return "command: %s\nexit: %s%s\nstdout (%d bytes): %r\nstderr:\n%s" % (
            " ".join(self.argv), describe_rc(self.returncode),
            " (timed out, killed)" if self.timed_out else "", len(self.stdout),
            self.stdout[:300], self.stderr)


def s_client(port, payload, expect_len, servername=None, cafile=None, extra=(), timeout=20.0):
    """openssl s_client -brief: sends payload, reads until expect_len bytes came back (or EOF or
    timeout), then closes stdin so s_client sends close_notify and exits. Never hangs: killed
    after `timeout`.
    """
    return s_client_steps(port, [(payload, expect_len)], servername, cafile, extra, timeout)


def s_client_steps(port, steps, servername=None, cafile=None, extra=(), timeout=20.0):
    """Like s_client(), in steps: for each (bytes, n) writes bytes to s_client's stdin, then
    waits until n bytes in all have come back. (s_client's interactive commands, e.g. a line
    "k" for a TLS 1.3 KeyUpdate, stop its stdin forwarding in OpenSSL 3.0: do not rely on them.)"""
    require_tool("openssl")
    argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-brief"]
    if servername:
        argv += ["-servername", servername]
    else:
        argv += ["-noservername"]
    if cafile:
        argv += ["-CAfile", cafile, "-verify_return_error"]
        if servername:
            argv += ["-verify_hostname", servername]
    argv += list(extra)
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    got = bytearray()
    err = []
    cond = threading.Condition()

    def read_out():
        while True:
            b = p.stdout.read1(65536)
            with cond:
                if not b:
                    cond.notify_all()
                    return
                got.extend(b)
                cond.notify_all()

    def read_err():
        err.append(p.stderr.read().decode("utf-8", "replace"))

    t_out = threading.Thread(target=read_out, daemon=True)
    t_err = threading.Thread(target=read_err, daemon=True)
    t_out.start()
    t_err.start()
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        for payload, expect_len in steps:
            try:
                p.stdin.write(payload)
                p.stdin.flush()
            except BrokenPipeError:
                break  # s_client already gave up (handshake failure): its output says why
            with cond:
                while len(got) < expect_len and t_out.is_alive() and p.poll() is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    cond.wait(min(left, 0.5))  # also re-checks p.poll()
            if len(got) < expect_len:
                break
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        try:
            p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            p.kill()
            p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        t_out.join(5)
        t_err.join(5)
        for f in (p.stdout, p.stderr):
            f.close()
    return SClientResult(argv, p.returncode, bytes(got), "".join(err), timed_out)


def tls_close_kind(sock, timeout=15.0):
    """Reads until the peer ends the connection; says how: 'close_notify', 'alert:REASON',
    'eof' (TCP FIN without close_notify), 'reset', or 'timeout'. Application data is discarded
    (its byte count is in the second return value)."""
    sock.settimeout(timeout)
    n = 0
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                return "close_notify", n
            n += len(d)
    except ssl.SSLZeroReturnError:
        return "close_notify", n
    except ssl.SSLEOFError:
        return "eof", n
    except ssl.SSLError as e:
        return "alert:%s" % (e.reason or e), n
    except socket.timeout:
        return "timeout", n
    except (ConnectionResetError, BrokenPipeError):
        return "reset", n


def connect_and_wait_close(port, server_name, cafile, timeout=15.0):
    """Handshakes and waits for the proxy to close; a handshake ended by an alert counts as
    'alert:...'. Returns the close kind (see tls_close_kind)."""
    try:
        s = tls_connect(port, server_name, cafile, timeout=timeout)
    except ssl.SSLEOFError:
        return "eof"
    except ssl.SSLCertVerificationError as e:
        return "cert_error:%s" % e.verify_message
    except ssl.SSLError as e:
        return "alert:%s" % (e.reason or e)
    except socket.timeout:
        return "timeout"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    with s:
        return tls_close_kind(s, timeout)[0]


# --------------------------------------------------------------------------------------------
# Test base class


class E2ETestCase(unittest.TestCase):
    """Per class: a temp dir (cls.class_tmp). Per test: self.tmp; processes started through
    start_backend()/start_proxy() are stopped at cleanup even when the test fails, and a proxy
    that died during the test (crash) fails the test there."""

    @classmethod
    def setUpClass(cls):
        ztproxy_bin()  # skip the whole class early when there is no binary
        cls.class_tmp = tempfile.mkdtemp(prefix="ztp-e2e-%s-" % cls.__name__)
        cls.addClassCleanup(shutil.rmtree, cls.class_tmp, True)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ztp-e2e-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def start_backend(self, mode="http", proxy_protocol=None):
        b = Backend(mode, proxy_protocol)
        self.addCleanup(b.stop)
        return b

    def start_proxy(self, args, listeners=1, **kw):
        if (FORCED_RECORD_PATH and args and args[0] == "run" and "--listen" in args
                and "--record-path" not in args):
            args = list(args) + ["--record-path", FORCED_RECORD_PATH]
        p = Proxy(args, listeners=listeners, **kw)
        self.addCleanup(self._stop_proxy, p)
        return p

    def start_quick_admin(self, leaf, *extra):
        """Quick mode in front of an HTTP backend with the admin endpoint: (proxy, admin address)."""
        backend = self.start_backend("http")
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", backend.address,
                                  "--cert", leaf.cert, "--key", leaf.key,
                                  "--admin", "127.0.0.1:0"] + list(extra))
        return proxy, proxy.admin_address()

    def write_policy(self, text, name="policy.toml"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_policy_proxy(self, text, listeners=1, **kw):
        return self.start_proxy(["run", "-c", self.write_policy(text)], listeners=listeners, **kw)

    @staticmethod
    def _stop_proxy(p):
        died_early = not p.stopped and not p.alive()
        rc, _ = p.stop()
        if died_early:
            raise AssertionError("ztproxy exited during the test (%s)\n%s"
                                 % (describe_rc(rc), p.diag()))
        if rc is not None and rc < 0 and rc != -signal.SIGKILL:
            raise AssertionError("ztproxy died from %s on SIGTERM\n%s" % (describe_rc(rc), p.diag()))


class LocalhostTestCase(E2ETestCase):
    """An E2ETestCase with a throwaway CA (cls.ca) and an ECDSA leaf for "localhost" (cls.leaf)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ca = CertAuthority(os.path.join(cls.class_tmp, "pki"))
        cls.leaf = cls.ca.issue("localhost", "ec", dns=["localhost"])


def open_fd_count(pid):
    """Number of open file descriptors of a process (Linux /proc)."""
    return len(os.listdir("/proc/%d/fd" % pid))


def wait_until(predicate, timeout, what):
    """For states that no process announces (e.g. /proc counters): re-checks predicate every
    50 ms up to `timeout`. Returns the last value; raises AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(0.05)


class HeldPolicyRead:
    """Holds ztproxy's next read of its policy file, so that a reload lasts as long as a test
    needs: the file is swapped for a named pipe, whose open blocks the reloading main thread until
    a writer comes. wait_reading() returns once the reload has begun (the pipe has its reader);
    release() puts the file back (with `text`, if given) and hands the reader the same bytes.
    Register release() as a cleanup: a reload left waiting would hold the proxy's main thread."""

    def __init__(self, path):
        self.path = path
        self.saved = path + ".held"
        with open(path) as f:
            self.text = f.read()
        os.rename(path, self.saved)
        os.mkfifo(path, 0o600)
        self.fd = None
        self.released = False

    def _open_writer(self):
        # A non-blocking open for writing succeeds only while the pipe has a reader (ENXIO else):
        # how the test learns, without a log line, that the reload is reading the policy.
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
        return self.fd is not None

    def wait_reading(self, timeout=EVENT_TIMEOUT):
        wait_until(self._open_writer, timeout, "the reload to open the policy file")

    def release(self, text=None):
        if self.released:
            return
        self.released = True
        if text is not None:
            self.text = text
            with open(self.saved, "w") as f:
                f.write(text)
        if self.fd is None:
            self._open_writer()  # a reload that began after the last look
        os.rename(self.saved, self.path)  # later reads get a plain file again
        if self.fd is not None:
            os.write(self.fd, self.text.encode())  # far below the pipe's buffer: never blocks
            os.close(self.fd)  # end of file for the reader
            self.fd = None


class BioTlsClient:
    """TLS driven through ssl.MemoryBIO over a blocking socket, so that a test controls each
    step. Its use: send close_notify and keep reading (a TLS half-close), which SSLSocket cannot
    do (unwrap() waits for the peer's close_notify and drops data)."""

    def __init__(self, port, server_name, ctx, timeout=15.0, hold_final_flight=False, dribble=False):
        """hold_final_flight: the client's last handshake flight (its Finished) is not sent at the
        end of the handshake but with the first write(), in the same send(). dribble: every byte
        goes out in a send() of its own (TCP_NODELAY, a short pause after each), so the server
        sees each record, the ClientHello's and the Finished's too, arrive a byte at a time."""
        self.dribble = dribble
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if dribble:
            self.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=server_name)
        while True:
            try:
                self.obj.do_handshake()
                if not hold_final_flight:
                    self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                if not self._pump():
                    raise ssl.SSLEOFError("EOF during the handshake")

    def _flush(self):
        data = self.out.read()
        if data and self.dribble:
            for i in range(len(data)):
                self.raw.sendall(data[i:i + 1])
                time.sleep(0.0005)
        elif data:
            self.raw.sendall(data)

    def _pump(self):
        d = self.raw.recv(256 * 1024)
        if d:
            self.inc.write(d)
        else:
            self.inc.write_eof()
        return d

    def write(self, data):
        view = memoryview(data)
        for i in range(0, len(view), 64 * 1024):
            self.obj.write(view[i:i + 64 * 1024])
            self._flush()

    def read_exactly(self, n):
        """n bytes of application data; socket.timeout when they do not come in time."""
        got = bytearray()
        while len(got) < n:
            try:
                got += self.obj.read(n - len(got))
            except ssl.SSLWantReadError:
                if not self._pump():
                    raise ssl.SSLEOFError("EOF after %d of %d bytes" % (len(got), n))
        return bytes(got)

    def half_close(self):
        """Sends close_notify; reading stays possible."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()

    def read_until_close(self):
        """Reads until the peer ends; returns (data, 'close_notify' | 'eof' | 'reset' | error)."""
        got = bytearray()
        try:
            while True:
                try:
                    c = self.obj.read(256 * 1024)
                    if not c:
                        return bytes(got), "close_notify"
                    got += c
                except ssl.SSLWantReadError:
                    self._flush()
                    if not self._pump():
                        return bytes(got), "eof"
        except ssl.SSLZeroReturnError:
            return bytes(got), "close_notify"
        except ssl.SSLEOFError:
            return bytes(got), "eof"
        except ConnectionResetError:
            return bytes(got), "reset"
        except socket.timeout:
            return bytes(got), "timeout"

    def close(self):
        self.raw.close()


def half_close_exchange(port, server_name, ctx, payload, timeout=15.0):
    """Sends payload, then close_notify (a TLS half-close), and reads until the peer ends the
    connection: returns (data, how) as BioTlsClient.read_until_close()."""
    c = BioTlsClient(port, server_name, ctx, timeout)
    try:
        c.write(payload)
        c.half_close()
        return c.read_until_close()
    finally:
        c.close()


class PipeReaders:
    """What a child process writes to its output streams, each read to its end by a thread of its
    own into one of `bufs`; `cond` is notified at every piece and at every end."""

    def __init__(self, *streams):
        self.bufs = tuple(bytearray() for _ in streams)
        self.cond = threading.Condition()
        self.ended = 0
        self.threads = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                        for s, b in zip(streams, self.bufs)]
        for t in self.threads:
            t.start()

    def _read(self, stream, into):
        while True:
            try:
                b = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            except OSError:  # a pseudo-terminal's master reads EIO once the client is gone
                b = b""
            with self.cond:
                if not b:
                    self.ended += 1
                    self.cond.notify_all()
                    return
                into.extend(b)
                self.cond.notify_all()

    def wait(self, predicate, deadline, exited):
        """True once predicate(*bufs) holds; False at the deadline, or once exited() and every
        stream was read to its end (what the process printed last is judged before giving up)."""
        with self.cond:
            while not predicate(*(bytes(b) for b in self.bufs)):
                left = deadline - time.monotonic()
                if left <= 0 or (exited() and self.ended == len(self.threads)):
                    return False
                self.cond.wait(min(left, 0.2))
            return True

    def join(self, timeout):
        for t in self.threads:
            t.join(timeout)


class SClientSession:
    """`openssl s_client -brief` with its stdout and stderr collected; the test writes lines to
    its stdin and waits on what it printed. Bounded everywhere; close() always reaps it."""

    def __init__(self, port, servername, cafile, extra=()):
        require_tool("openssl")
        self.argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-brief",
                     "-servername", servername, "-CAfile", cafile, "-verify_return_error"] + \
            list(extra)
        self.p = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.io = PipeReaders(self.p.stdout, self.p.stderr)
        self.out, self.err = self.io.bufs

    def write(self, data):
        try:
            self.p.stdin.write(data)
            self.p.stdin.flush()
            return True
        except (BrokenPipeError, ValueError):
            return False

    def wait(self, predicate, timeout):
        """Waits until predicate(stdout, stderr) holds, s_client exits, or the timeout. After an
        exit, what s_client printed last may still be in the pipes: judged once both are drained."""
        return self.io.wait(predicate, time.monotonic() + timeout, lambda: self.p.poll() is not None)

    def wait_exit(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        try:
            self.p.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        if self.wait_exit(10) is None:
            self.p.kill()
            self.p.wait(10)
        self.io.join(5)
        for f in (self.p.stdout, self.p.stderr):
            f.close()

    def describe(self):
        rc = self.p.poll()
        return "command: %s\nexit: %s\nstdout: %r\nstderr:\n%s" % (
            " ".join(self.argv), "running" if rc is None else describe_rc(rc),
            bytes(self.out[:300]), self.err.decode("utf-8", "replace"))
