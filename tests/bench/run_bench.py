#!/usr/bin/env python3
"""ztproxy side by side with nginx (stream + ssl) and HAProxy (mode tcp), one worker each.

    tests/bench/run_bench.py [--quick] [--full] [--only bulk,handshake,keepalive,idle,ktls] [...]

Expects build/ztproxy, build/tests/bench/bench_backend and build/tests/bench/bench_client
(`cmake --build build --target ztproxy bench_backend bench_client`; `make bench` does that first).
Installs nginx, libnginx-mod-stream, haproxy, wrk and gnuplot-nox with apt-get when missing (and
valgrind and strace, for handshake_profile.py and handshake_syscalls.py).

Every proxy is a pure TLS terminator in front of the same plaintext backend (bench_backend), with
the same certificate (ECDSA P-256; RSA-2048 for the RSA handshake rows), one worker, pinned to
--proxy-cpu; the load (bench_client / wrk, and the backend) runs on --load-cpu. The clients offer
exactly one TLS version and one cipher (TLS 1.3 TLS_AES_128_GCM_SHA256 by default; TLS 1.2
ECDHE-*-AES128-GCM-SHA256), and nginx/HAProxy are configured to the same single suite.

CPU cost is utime+stime of the proxy's whole process tree (/proc/PID/stat), before/after the load.
Memory per idle connection is the PSS delta of the process tree (/proc/PID/smaps_rollup) with N
idle TLS connections open (handshake done, no application data), divided by N.

Writes tests/bench/results/latest.md (table + machine) and latest.png (relative chart), and prints
the table. All processes it starts run in their own session under `timeout` (a hard bound even if
this script is killed) and are stopped on exit, Ctrl-C or failure.
Not a test: performance is reported, never asserted.
"""
from __future__ import annotations

import argparse
import atexit
import resource
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests" / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30
NOISY_PCT = 25  # other processes took more than this % of the proxy CPU during a run: noisy run
MIB = 1 << 20

# ---------------------------------------------------------------------------------------------
# Process bookkeeping: everything we start is tracked and killed (by its own process group).

_procs: list[subprocess.Popen] = []


def _kill_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(p: subprocess.Popen | None, grace: float = 3.0) -> None:
    if p is None:
        return
    if p.poll() is None:
        _kill_group(p, signal.SIGTERM)
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill_group(p, signal.SIGKILL)
            p.wait(timeout=5)
    else:
        _kill_group(p, signal.SIGKILL)  # stray children of a dead leader
    if p in _procs:
        _procs.remove(p)


def cleanup() -> None:
    for p in list(_procs):
        stop(p, grace=1.0)


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")  # stop, clean up, write what was measured


def spawn(argv: list[str], *, limit_s: float, stdout=subprocess.DEVNULL, stderr=None, stdin=subprocess.DEVNULL,
          env=None) -> subprocess.Popen:
    """Start argv in a new session under `timeout` (hard bound), tracked for cleanup."""
    full = ["timeout", "-k", "5", str(int(limit_s))] + argv
    p = subprocess.Popen(full, stdout=stdout, stderr=stderr, stdin=stdin, start_new_session=True, env=env)
    _procs.append(p)
    return p


def run_tool(argv: list[str], *, limit_s: float, env=None) -> tuple[int, str, str]:
    p = spawn(argv, limit_s=limit_s, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = p.communicate(timeout=limit_s + 10)
    finally:
        stop(p)
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


# ---------------------------------------------------------------------------------------------
# /proc accounting


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of the process tree (all threads, dead threads included)."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def core_times(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                total = sum(v[:8])
                return total - v[3] - v[4], total
    return 0, 0


class LoadCore:
    """How busy the load generator's CPU was (near 100%: the client side was the limit), and how
    much of the proxy's CPU went to processes that are not part of the benchmark (interference from
    whatever else runs on this host)."""

    def __init__(self, cpu: int, proxy_cpu: int = -1, proxy_pid: int = 0):
        self.cpu, self.proxy_cpu, self.proxy_pid = cpu, proxy_cpu, proxy_pid
        self.t0 = core_times(cpu)
        self.p0 = core_times(proxy_cpu) if proxy_cpu >= 0 else (0, 0)
        self.c0 = cpu_seconds(proxy_pid) if proxy_pid else 0.0

    def busy_pct(self) -> float:
        b1, t1 = core_times(self.cpu)
        dt = t1 - self.t0[1]
        return 100.0 * (b1 - self.t0[0]) / dt if dt > 0 else 0.0

    def foreign_pct(self) -> float:
        """Busy time of the proxy's CPU not spent by the proxy, in % of that CPU."""
        if self.proxy_cpu < 0:
            return 0.0
        b1, t1 = core_times(self.proxy_cpu)
        dt = t1 - self.p0[1]
        if dt <= 0:
            return 0.0
        busy = (b1 - self.p0[0]) / CLK_TCK
        own = cpu_seconds(self.proxy_pid) - self.c0
        return max(0.0, 100.0 * (busy - own) / (dt / CLK_TCK))


def system_busy_pct(window: float = 0.5) -> float:
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v) - v[3] - v[4], sum(v)
    b0, t0 = snap()
    time.sleep(window)
    b1, t1 = snap()
    return 100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def peak_rss_kib(pid: int) -> int:
    """Sum of the tree's processes' peak resident set (VmHWM): each run starts a fresh proxy, so
    this is the run's peak (start-up included)."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(l.split()[1]) for l in f if l.startswith("VmHWM:")), 0)
        except OSError:
            continue
    return total


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in KiB of the process tree."""
    pss = rss = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            continue
    return pss, rss


# ---------------------------------------------------------------------------------------------
# Set-up


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def ensure_packages() -> None:
    need = []
    if not shutil.which("nginx"):
        need.append("nginx")
    if not Path("/usr/lib/nginx/modules/ngx_stream_module.so").exists():
        need.append("libnginx-mod-stream")
    if not shutil.which("haproxy"):
        need.append("haproxy")
    if not shutil.which("wrk"):
        need.append("wrk")
    if not shutil.which("gnuplot"):
        need.append("gnuplot-nox")
    # The per-handshake profiles (handshake_profile.py: callgrind; handshake_syscalls.py: strace).
    need += missing_tools({"valgrind": "valgrind", "strace": "strace"})
    apt_install(need)


def missing_tools(tools: dict[str, str]) -> list[str]:
    """The Debian packages of the commands in tools (command -> package) that are not installed."""
    return [pkg for cmd, pkg in tools.items() if not shutil.which(cmd)]


def apt_install(need: list[str]) -> None:
    if not need:
        return
    apt = ["apt-get", "install", "-y", "--no-install-recommends"] + need
    if os.geteuid() != 0:
        apt = ["sudo"] + apt
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"installing {' '.join(need)} ...", flush=True)
    r = subprocess.run(apt, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run((["sudo"] if os.geteuid() != 0 else []) + ["apt-get", "update"], env=env,
                       capture_output=True)
        r = subprocess.run(apt, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"apt-get install {' '.join(need)} failed:\n{r.stderr[-2000:]}")


def make_certs(d: Path) -> dict[str, tuple[Path, Path, Path]]:
    """name -> (cert, key, combined pem for HAProxy)."""
    certs = {}
    for name, keyopt in (("ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                         ("rsa", ["-newkey", "rsa:2048"])):
        cert, key, both = d / f"{name}.pem", d / f"{name}.key", d / f"{name}.both.pem"
        r = sh(["openssl", "req", "-x509", *keyopt, "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"])
        if r.returncode != 0:
            sys.exit(f"openssl req failed: {r.stderr}")
        both.write_text(cert.read_text() + key.read_text())
        certs[name] = (cert, key, both)
    return certs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, log: Path | None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


# ---------------------------------------------------------------------------------------------
# Bench environment


class Bench:
    def __init__(self, args, tmp: Path):
        self.args = args
        self.tmp = tmp
        build = Path(args.build_dir)
        self.ztproxy = Path(args.ztproxy) if args.ztproxy else build / "ztproxy"
        self.backend_bin = build / "tests" / "bench" / "bench_backend"
        self.client_bin = build / "tests" / "bench" / "bench_client"
        for b in (self.ztproxy, self.backend_bin, self.client_bin):
            if not b.exists():
                sys.exit(f"{b} is missing: cmake --build {build} --target ztproxy bench_backend bench_client")
        # Others may rebuild build/ztproxy during a long run: measure one snapshot of it.
        snap = tmp / "ztproxy"
        shutil.copy2(self.ztproxy, snap)
        self.ztproxy_built = self.ztproxy
        self.ztproxy = snap
        self.certs = make_certs(tmp)
        self.loadavg_start = Path("/proc/loadavg").read_text().split()[:3]
        self.pin = (os.cpu_count() or 1) >= 2 and not args.no_pin
        # File descriptors: this host's hard limit bounds what every process may open (no
        # CAP_SYS_RESOURCE in containers). A TLS terminator holds two sockets per connection.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by what we start
        self.nofile = hard if hard != resource.RLIM_INFINITY else 1 << 20
        self.max_conns = max(1000, (self.nofile - 200) // 2)
        self.anomalies: list[str] = []
        self.ktls_lines: list[str] = []
        self.last_peak_kib = 0  # peak RSS of the proxy tree in the last measure()
        self.foreign: list[float] = []
        self.noisy_waits = 0
        self.run_counter = 0
        # wrk cannot be told a cipher: pin it with an OpenSSL config (system_default section).
        self.wrk_conf = tmp / "wrk-openssl.cnf"
        self.wrk_conf.write_text(
            "openssl_conf = ossl_init\n[ossl_init]\nssl_conf = ssl_sect\n[ssl_sect]\n"
            "system_default = sysdef\n[sysdef]\nMinProtocol = TLSv1.3\nMaxProtocol = TLSv1.3\n"
            "Ciphersuites = TLS_AES_128_GCM_SHA256\n")

    def proxy_cpu(self) -> list[str]:
        return ["taskset", "-c", str(self.args.proxy_cpu)] if self.pin else []

    def load_cpu(self) -> list[str]:
        return ["taskset", "-c", str(self.args.load_cpu)] if self.pin else []

    # -- backend
    def start_backend(self, mode: list[str]) -> tuple[subprocess.Popen, int]:
        p = spawn(self.load_cpu() + [str(self.backend_bin), "--max-seconds", "900", *mode], limit_s=960,
                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = p.stdout.readline().decode()
        m = re.match(r"port (\d+)", line)
        if not m:
            stop(p)
            raise RuntimeError(f"bench_backend {mode} did not start: {line!r}")
        return p, int(m.group(1))

    # -- proxies
    def start_proxy(self, kind: str, cert: str, bport: int, conns: int = 0) -> tuple[subprocess.Popen, int, Path]:
        """conns: connections the run will hold at once (0 = a few); sizes ztproxy's limit."""
        port, log, argv = self.proxy_command(kind, cert, bport, conns)
        with open(log, "wb") as logf:
            p = spawn(self.proxy_cpu() + argv, limit_s=900, stdout=subprocess.DEVNULL, stderr=logf)
        wait_port(port, p, kind, log)
        time.sleep(0.1)  # let the readiness probe's connection finish in the proxy
        return p, port, log

    def proxy_command(self, kind: str, cert: str, bport: int, conns: int = 0) -> tuple[int, Path, list[str]]:
        """(listening port, log file, command line) of one proxy of the bench, its config written;
        also for tools that run it under a tracer (keepalive_syscalls.py)."""
        self.run_counter += 1
        port = free_port()
        c, k, both = self.certs[cert]
        log = self.tmp / f"{kind}-{self.run_counter}.log"
        if kind.startswith("ztproxy-"):
            path = kind.split("-", 1)[1]
            argv = [str(self.ztproxy), "--log-level", "warn", "run", "--listen", f"127.0.0.1:{port}",
                    "--backend", f"127.0.0.1:{bport}", "--cert", str(c), "--key", str(k), "--workers", "1",
                    "--record-path", path, "--max-connections",
                    # ztproxy warns when the fd limit is below 6 per connection: stay under it
                    # except where the run really holds many connections.
                    str(max(conns + 64, (self.nofile - 64) // 6))]
        elif kind == "nginx":
            d = self.tmp / f"nginx-{self.run_counter}"
            d.mkdir()
            conf = d / "nginx.conf"
            conf.write_text(f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {self.nofile};
pid {d}/nginx.pid;
error_log {log} warn;
events {{ worker_connections {self.max_conns}; }}
stream {{
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {c};
        ssl_certificate_key {k};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
        proxy_pass 127.0.0.1:{bport};
    }}
}}
""")
            argv = ["nginx", "-p", str(d), "-c", str(conf), "-e", str(log)]
        elif kind == "haproxy":
            conf = self.tmp / f"haproxy-{self.run_counter}.cfg"
            conf.write_text(f"""
global
    nbthread 1
    maxconn {(self.nofile - 200) // 2}
    ssl-default-bind-ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode tcp
    timeout connect 5s
    timeout client 600s
    timeout server 600s
frontend fe
    bind 127.0.0.1:{port} ssl crt {both}
    default_backend be
backend be
    server s1 127.0.0.1:{bport}
""")
            argv = ["haproxy", "-db", "-f", str(conf)]
        else:
            raise ValueError(kind)
        return port, log, argv

    def wrk_keepalive(self, port: int, seconds: int) -> list[str]:
        """The keep-alive workload's wrk command (run it with OPENSSL_CONF=self.wrk_conf): one thread,
        --wrk-conns connections, GET / of bench_backend's `http` mode (1 KiB body) through the proxy."""
        return ["wrk", "-t1", f"-c{self.args.wrk_conns}", f"-d{seconds}s", "--timeout", "5s",
                f"https://127.0.0.1:{port}/"]

    def note_foreign(self, pct: float) -> None:
        self.foreign.append(pct)

    def measure(self, proxy_pid: int, run):
        """One measured run: wait for a quiet host, run(), and return (run's result, proxy
        CPU-seconds spent, load-generator CPU busy %, foreign load on the proxy's CPU %)."""
        self.wait_quiet()
        c0 = cpu_seconds(proxy_pid)
        lc = LoadCore(self.args.load_cpu, self.args.proxy_cpu if self.pin else -1, proxy_pid)
        r = run()
        cpu = cpu_seconds(proxy_pid) - c0
        self.last_peak_kib = peak_rss_kib(proxy_pid)
        load, foreign = lc.busy_pct(), lc.foreign_pct()
        self.note_foreign(foreign)
        return r, cpu, load, foreign

    def wait_quiet(self) -> None:
        """Before a measured run: wait (bounded by --quiet-wait) for the host to be nearly idle."""
        if self.args.quiet_wait <= 0:
            return
        deadline = time.monotonic() + self.args.quiet_wait
        while time.monotonic() < deadline:
            if system_busy_pct() < self.args.quiet_threshold:
                return
        self.noisy_waits += 1

    def check_log(self, kind: str, log: Path, what: str) -> None:
        try:
            text = log.read_text(errors="replace")
        except OSError:
            return
        lines = [l for l in text.splitlines() if l.strip()]
        if kind == "haproxy":  # HAProxy's start-up notices are not problems
            lines = [l for l in lines if "[NOTICE]" not in l]
        if kind.startswith("ztproxy"):  # the bench runs it as root on purpose (like the peers)
            lines = [l for l in lines if "running as root with every privilege" not in l]
        if lines:
            self.anomalies.append(f"{kind} during {what}: {len(lines)} log line(s), first: {lines[0][:300]}")

    def client(self, mode: str, amount: int, port: int, *extra: str, limit_s: float = 300) -> dict:
        rc, out, err = run_tool(self.load_cpu() + [str(self.client_bin), mode, str(amount), "--connect",
                                                   f"127.0.0.1:{port}", *extra], limit_s=limit_s)
        line = out.strip().splitlines()[-1] if out.strip() else "{}"
        try:
            res = json.loads(line)
        except json.JSONDecodeError:
            res = {"ok": False, "error": f"unparseable output {out[-300:]!r} {err[-300:]!r}"}
        if rc != 0 and res.get("ok", True):
            res["ok"] = False
            res.setdefault("error", f"exit {rc}: {err[-300:]}")
        return res


# ---------------------------------------------------------------------------------------------
# Results


class Results:
    def __init__(self, proxies: list[str]):
        self.proxies = proxies
        self.rows: list[tuple[str, str, str]] = []  # (workload, metric, better)
        self.values: dict[tuple[str, str], dict[str, list[float]]] = {}
        self.details: list[str] = []

    def add(self, workload: str, metric: str, better: str, proxy: str, value: float | None,
            noisy: bool = False) -> None:
        key = (workload, metric)
        if key not in self.values:
            self.rows.append((workload, metric, better))
            self.values[key] = {}
        if value is not None:
            self.values[key].setdefault(proxy, []).append((value, noisy))

    def median(self, key, proxy) -> float | None:
        """Median of the runs without foreign load on the proxy CPU, or of all when none was clean."""
        v = self.values[key].get(proxy)
        if not v:
            return None
        clean = [x for x, noisy in v if not noisy]
        return statistics.median(clean or [x for x, _ in v])

    def best_peer(self, key, better) -> float | None:
        peers = [self.median(key, p) for p in ("nginx", "haproxy") if p in self.proxies]
        peers = [v for v in peers if v is not None]
        if not peers:
            return None
        return max(peers) if better == "higher" else min(peers)

    def zt_variants(self) -> list[str]:
        return [p for p in self.proxies if p.startswith("ztproxy-")]

    def paths_compared(self) -> bool:
        return {"ztproxy-userspace", "ztproxy-openssl"} <= set(self.proxies)

    def table(self) -> str:
        zts = self.zt_variants()
        head = ["workload", "metric"] + self.proxies + [f"{z.replace('ztproxy-', '')}/best peer" for z in zts]
        if self.paths_compared():
            head.append("userspace/openssl")
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for wl, metric, better in self.rows:
            key = (wl, metric)
            cells = [wl, f"{metric} ({'↑' if better == 'higher' else '↓'})"]
            for p in self.proxies:
                cells.append(fmt(self.median(key, p)))
            best = self.best_peer(key, better)
            for z in zts:
                v = self.median(key, z)
                cells.append(f"{v / best:.2f}" if v is not None and best else "n/a")
            if self.paths_compared() and "CPU" not in metric:
                cells.append("")
            elif self.paths_compared():
                # The measure: the same proxy, its own record layer against OpenSSL's, per unit of CPU.
                u, o = self.median(key, "ztproxy-userspace"), self.median(key, "ztproxy-openssl")
                cells.append(f"{u / o:.2f}" if u is not None and o else "n/a")
            out.append("| " + " | ".join(cells) + " |")
        return "\n".join(out)

    def scores(self) -> list[tuple[str, dict[str, float]]]:
        """Per row: relative performance (higher is better), best peer = 1."""
        rows = []
        for wl, metric, better in self.rows:
            if metric == "proxy peak RSS MiB":  # in the table only: the chart is about cost per unit
                continue
            key = (wl, metric)
            best = self.best_peer(key, better)
            if not best:
                continue
            s = {}
            for p in self.proxies:
                v = self.median(key, p)
                if v:
                    s[p] = v / best if better == "higher" else best / v
            rows.append((short_label(wl, metric), s))
        return rows


def short_label(wl: str, metric: str) -> str:
    w = (wl.replace("bulk ", "").replace(" AES128-GCM", "").replace("full handshake ", "hs ")
         .replace("keep-alive HTTP/1.1 1 KiB (wrk)", "keep-alive").replace(" idle TLS connections", " idle")
         .replace("ECDSA P-256", "ECDSA").replace("RSA-2048", "RSA").replace("TLS1.", "1."))
    m = {"Gbit/s": "Gbit/s", "proxy CPU-s/GB": "CPU/GB", "handshakes/s": "rate", "proxy CPU-µs/handshake": "CPU/hs",
         "requests/s": "req/s", "proxy CPU-µs/request": "CPU/req", "proxy KiB/connection (PSS)": "KiB/conn"}
    return f"{w} {m.get(metric, metric)}"


def fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


# ---------------------------------------------------------------------------------------------
# Workloads


def run_bulk(b: Bench, res: Results, proxies: list[str]) -> None:
    a = b.args
    versions = ["1.3"] + (["1.2"] if a.tls12 else [])
    nbytes = a.bulk_bytes
    for tls in versions:
        for direction in ("download", "upload"):
            wl = f"bulk {direction} TLS{tls} AES128-GCM"
            for rep in range(a.reps):
                for kind in proxies:
                    mode = ["source", str(nbytes)] if direction == "download" else ["sink", str(nbytes)]
                    be, bport = b.start_backend(mode)
                    px = None
                    try:
                        px, port, log = b.start_proxy(kind, "ecdsa", bport)
                        r, cpu, load, foreign = b.measure(px.pid, lambda: b.client(
                            direction, nbytes, port, "--tls", tls, "--max-seconds", str(a.max_run_seconds),
                            limit_s=a.max_run_seconds + 30))
                    finally:
                        stop(px)
                        stop(be)
                    b.check_log(kind, log, wl)
                    if not r.get("ok"):
                        b.anomalies.append(f"{kind} {wl}: client failed: {r}")
                        res.add(wl, "Gbit/s", "higher", kind, None)
                        res.add(wl, "proxy CPU-s/GB", "lower", kind, None)
                        continue
                    gb = r["bytes"] / 1e9
                    res.add(wl, "Gbit/s", "higher", kind, r["gbps"], noisy=foreign > NOISY_PCT)
                    res.add(wl, "proxy CPU-s/GB", "lower", kind, cpu / gb, noisy=foreign > NOISY_PCT)
                    res.add(wl, "proxy peak RSS MiB", "lower", kind, b.last_peak_kib / 1024)
                    res.details.append(f"{wl} rep{rep} {kind}: {r['gbps']:.2f} Gbit/s, {r['seconds']:.2f} s, proxy CPU "
                                       f"{cpu:.2f} s ({100 * cpu / r['seconds']:.0f}% of one core), load CPU {load:.0f}% busy, foreign load on proxy CPU {foreign:.0f}%, "
                                       f"{r.get('version')} {r.get('cipher')}")
                    print(f"  {res.details[-1]}", flush=True)


def run_handshakes(b: Bench, res: Results, proxies: list[str]) -> None:
    a = b.args
    for cert in ("ecdsa", "rsa"):
        for tls in ("1.3", "1.2"):
            wl = f"full handshake {'ECDSA P-256' if cert == 'ecdsa' else 'RSA-2048'} TLS{tls}"
            for rep in range(a.reps):
                for kind in proxies:
                    be, bport = b.start_backend(["echo"])
                    px = None
                    try:
                        px, port, log = b.start_proxy(kind, cert, bport)
                        common = ["--tls", tls, "--threads", str(a.hs_threads)]
                        b.client("handshakes", 50, port, *common, "--duration", "5", limit_s=30)  # warm-up
                        r, cpu, load, foreign = b.measure(px.pid, lambda: b.client(
                            "handshakes", a.hs_max, port, *common, "--duration", str(a.hs_seconds),
                            limit_s=a.hs_seconds + 60))
                    finally:
                        stop(px)
                        stop(be)
                    b.check_log(kind, log, wl)
                    n = r.get("handshakes", 0)
                    if not r.get("ok") or n == 0:
                        b.anomalies.append(f"{kind} {wl}: client reported {r}")
                    if n == 0:
                        res.add(wl, "handshakes/s", "higher", kind, None)
                        res.add(wl, "proxy CPU-µs/handshake", "lower", kind, None)
                        continue
                    res.add(wl, "handshakes/s", "higher", kind, r["per_second"], noisy=foreign > NOISY_PCT)
                    res.add(wl, "proxy CPU-µs/handshake", "lower", kind, cpu / n * 1e6, noisy=foreign > NOISY_PCT)
                    res.add(wl, "proxy peak RSS MiB", "lower", kind, b.last_peak_kib / 1024)
                    res.details.append(f"{wl} rep{rep} {kind}: {r['per_second']:.0f}/s ({n} in {r['seconds']:.2f} s, "
                                       f"{r.get('failed', 0)} failed), proxy CPU {cpu:.2f} s "
                                       f"({100 * cpu / r['seconds']:.0f}% of one core), load CPU {load:.0f}% busy, foreign load on proxy CPU {foreign:.0f}%, {r.get('version')} "
                                       f"{r.get('cipher')}")
                    print(f"  {res.details[-1]}", flush=True)


def parse_wrk(out: str) -> dict:
    r: dict = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    r["socket_errors"] = m.group(1) if m else ""
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    return r


def run_keepalive(b: Bench, res: Results, proxies: list[str]) -> None:
    a = b.args
    wl = "keep-alive HTTP/1.1 1 KiB (wrk)"
    env = dict(os.environ, OPENSSL_CONF=str(b.wrk_conf))
    for rep in range(a.reps):
        for kind in proxies:
            be, bport = b.start_backend(["http"])
            px = None
            try:
                px, port, log = b.start_proxy(kind, "ecdsa", bport)
                (rc, out, err), cpu, load, foreign = b.measure(px.pid, lambda: run_tool(
                    b.load_cpu() + b.wrk_keepalive(port, a.ka_seconds), limit_s=a.ka_seconds + 30, env=env))
            finally:
                stop(px)
                stop(be)
            b.check_log(kind, log, wl)
            w = parse_wrk(out)
            if rc != 0 or not w["rps"] or w["socket_errors"] or w["non2xx"]:
                b.anomalies.append(f"{kind} {wl}: wrk rc={rc} {w} {err.strip()[-200:]}")
            if not w["rps"] or not w["requests"]:
                res.add(wl, "requests/s", "higher", kind, None)
                res.add(wl, "proxy CPU-µs/request", "lower", kind, None)
                continue
            res.add(wl, "requests/s", "higher", kind, w["rps"], noisy=foreign > NOISY_PCT)
            res.add(wl, "proxy CPU-µs/request", "lower", kind, cpu / w["requests"] * 1e6, noisy=foreign > NOISY_PCT)
            res.add(wl, "proxy peak RSS MiB", "lower", kind, b.last_peak_kib / 1024)
            res.details.append(f"{wl} rep{rep} {kind}: {w['rps']:.0f} req/s, {w['requests']} requests, proxy CPU "
                               f"{cpu:.2f} s ({100 * cpu / a.ka_seconds:.0f}% of one core), load CPU {load:.0f}% busy, foreign load on proxy CPU {foreign:.0f}%"
                               + (f", socket errors: {w['socket_errors']}" if w["socket_errors"] else ""))
            print(f"  {res.details[-1]}", flush=True)


def run_ktls(b: Bench, res: Results, proxies: list[str]) -> None:
    """Functional, not timed: bytes through user space per GB on the kernel (kTLS + splice) route,
    measured by tests/bench/ktls_splice_bytes.py inside a kernel that has kTLS (this host's, or the
    project's kTLS VM)."""
    out = b.tmp / "ktls.json"
    nbytes = 64 * MIB if b.args.quick else 256 * MIB
    cmd = [sys.executable, str(ROOT / "tests" / "bench" / "ktls_splice_bytes.py"), "--build-dir",
           str(Path(b.args.build_dir).resolve()), "--out", str(out), "--bytes", str(nbytes)]
    where = "this host's kernel"
    if not Path("/proc/net/tls_stat").exists():
        cmd = [str(ROOT / "tests" / "ktls" / "run-in-ktls-kernel.sh"), "python3", *cmd[1:]]
        where = "the kTLS VM (tests/ktls/run-in-ktls-kernel.sh)"
    rc, stdout, stderr = run_tool(cmd, limit_s=1200)
    if not out.exists():
        b.anomalies.append(f"kTLS splice route: no result (rc={rc}): {(stdout + stderr).strip()[-300:]}")
        return
    data = json.loads(out.read_text())
    b.anomalies += [f"kTLS splice route: {e[:300]}" for e in data["errors"]]
    b.ktls_lines = [
        f"In {where}, Linux {data['kernel']}: one transfer of {nbytes / MIB:.0f} MiB per row through "
        "`ztproxy run --ktls require --record-path kernel`; bytes from the proxy's access log, kernel "
        "record crypto from /proc/net/tls_stat deltas.",
        "",
        "| TLS | direction | cipher | rx/tx path | bytes spliced | bytes through user space | per GB | "
        "tls_stat TlsTxSw/TlsRxSw Δ |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {r['tls']} | {r['direction']} | {r['cipher']} | {r['rx_path']}/{r['tx_path']} | {r['spliced']:,} | "
          f"{r['copied']:,} | {r['copied_per_gb']:.0f} | {r['tls_stat']['TlsTxSw']}/{r['tls_stat']['TlsRxSw']} |"
          for r in data["runs"]],
    ]
    for r in data["runs"]:
        print(f"  kTLS {r['tls']} {r['direction']}: {r['spliced']} spliced, {r['copied']} through user space",
              flush=True)


def run_idle(b: Bench, res: Results, proxies: list[str]) -> None:
    a = b.args
    n = a.idle_conns
    if n > b.max_conns - 100:  # the client, the backend and the proxy each hold N (proxy: 2N) fds
        b.anomalies.append(f"idle: {n} connections exceed this host's fd limit ({b.nofile}); measured "
                           f"{b.max_conns - 100}")
        n = b.max_conns - 100
    wl = f"{n} idle TLS connections"
    for kind in proxies:  # one repetition: memory deltas are stable
        be, bport = b.start_backend(["sink"])
        px = cl = None
        try:
            px, port, log = b.start_proxy(kind, "ecdsa", bport, conns=n)
            b.wait_quiet()
            pss0, rss0 = memory_kib(px.pid)
            cl = spawn(b.load_cpu() + [str(b.client_bin), "idle", str(n), "--connect", f"127.0.0.1:{port}",
                                       "--threads", "2", "--max-seconds", "300"], limit_s=330,
                       stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
            line = cl.stdout.readline().decode()
            r = json.loads(line) if line.strip() else {"ok": False, "error": "no output"}
            time.sleep(1.0)  # let the proxy finish backend connects and settle
            pss1, rss1 = memory_kib(px.pid)
            peak = peak_rss_kib(px.pid)
            cl.stdin.close()
            cl.wait(timeout=30)
        finally:
            stop(cl)
            stop(px)
            stop(be)
        b.check_log(kind, log, wl)
        opened = r.get("open", 0)
        if not r.get("ok") or opened != n:
            b.anomalies.append(f"{kind} {wl}: client reported {r}")
        if not opened:
            res.add(wl, "proxy KiB/connection (PSS)", "lower", kind, None)
            continue
        res.add(wl, "proxy KiB/connection (PSS)", "lower", kind, (pss1 - pss0) / opened)
        res.add(wl, "proxy peak RSS MiB", "lower", kind, peak / 1024)
        res.details.append(f"{wl} {kind}: {opened} open, PSS {pss0} -> {pss1} KiB, RSS {rss0} -> {rss1} KiB: "
                           f"{(pss1 - pss0) / opened:.1f} KiB/conn (PSS), {(rss1 - rss0) / opened:.1f} (RSS)")
        print(f"  {res.details[-1]}", flush=True)


# ---------------------------------------------------------------------------------------------
# Report


def first_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    text = (r.stdout + r.stderr).strip()
    return text.splitlines()[0] if text else "n/a"


def machine(b: Bench) -> list[str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
    try:
        git = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).stdout.strip()
        dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
        git += " (+ uncommitted changes)" if dirty else ""
    except OSError:
        git = "?"
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem}",
        f"- kernel: {platform.release()}; kTLS: {'yes' if Path('/proc/net/tls_stat').exists() else 'no (/proc/net/tls_stat missing)'}",
        f"- ztproxy: {first_line([str(b.ztproxy), '--version'])}, git {git} ({b.ztproxy_built}, copied at start)",
        f"- load average at start: {' '.join(b.loadavg_start)}, at end: "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}; other processes on the proxy CPU during the "
        f"measured runs: median {statistics.median(b.foreign) if b.foreign else 0:.0f}%, max "
        f"{max(b.foreign) if b.foreign else 0:.0f}% of that CPU (the host is shared: throughput numbers "
        "suffer first, CPU-per-unit numbers less); runs started without a quiet host after "
        f"--quiet-wait {b.args.quiet_wait:g} s: {b.noisy_waits}",
        f"- nginx: {first_line(['nginx', '-v'])}",
        f"- HAProxy: {first_line(['haproxy', '-v'])}",
        f"- OpenSSL: {first_line(['openssl', 'version'])}",
        f"- wrk: {first_line(['wrk', '-v'])}",
        f"- pinning: proxy on CPU {b.args.proxy_cpu}, load generator + backend on CPU {b.args.load_cpu}"
        if b.pin else "- pinning: off",
    ]


def write_chart(res: Results, path: Path, tmp: Path) -> str | None:
    if not shutil.which("gnuplot"):
        return "gnuplot not available"
    rows = res.scores()
    if not rows:
        return "no rows"
    data = tmp / "chart.dat"
    with open(data, "w") as f:
        f.write("# label " + " ".join(res.proxies) + "\n")
        for label, s in rows:
            short = label.replace("\"", "'")
            f.write(f"\"{short}\" " + " ".join(f"{s.get(p, 0):.4f}" for p in res.proxies) + "\n")
    height = max(600, 28 * len(rows) * 1 + 200)
    plot = tmp / "chart.gp"
    cols = ", ".join(f"'{data}' using {i + 2}:xtic(1) title '{p}'" for i, p in enumerate(res.proxies))
    plot.write_text(f"""
set terminal pngcairo size 1500,{height} font 'sans,9'
set output '{path}'
set title "ztproxy vs nginx / HAProxy, one worker each: relative performance per metric\\n(best of nginx/HAProxy = 1.0; higher is better; cost metrics (CPU, KiB) are shown inverted: best peer cost / cost)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top right
set yrange [0:*]
set grid ytics
set xtics rotate by -45 left font ',9'
set bmargin 9
set xrange [-0.7:*]
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5
plot {cols}
""")
    r = sh(["gnuplot", str(plot)])
    return None if r.returncode == 0 else f"gnuplot failed: {r.stderr[-500:]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run under a minute")
    ap.add_argument("--full", action="store_true", help="larger: 10,000 idle connections")
    ap.add_argument("--only", default="bulk,handshake,keepalive,idle,ktls",
                    help="comma-separated subset of bulk,handshake,keepalive,idle,ktls")
    ap.add_argument("--proxies", default=None, help="comma-separated subset (default: all available)")
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    ap.add_argument("--ztproxy", default=None, help="ztproxy binary (default: BUILD_DIR/ztproxy)")
    ap.add_argument("--bulk-bytes", type=int, default=None, help="bytes per bulk run")
    ap.add_argument("--no-tls12", dest="tls12", action="store_false", help="bulk: TLS 1.3 only")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per cell (median reported)")
    ap.add_argument("--hs-seconds", type=float, default=None)
    ap.add_argument("--hs-threads", type=int, default=4)
    ap.add_argument("--hs-max", type=int, default=200000, help="handshake count bound per run")
    ap.add_argument("--ka-seconds", type=int, default=None)
    ap.add_argument("--wrk-conns", type=int, default=32)
    ap.add_argument("--idle-conns", type=int, default=None)
    ap.add_argument("--max-run-seconds", type=int, default=60, help="bound for one bulk transfer")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="seconds to wait before each run for the host to be idle (shared machines)")
    ap.add_argument("--quiet-threshold", type=float, default=20.0, help="%% busy (all CPUs) that counts as idle")
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "latest"), help="output prefix (.md and .png)")
    ap.add_argument("--chart-from", default=None, metavar="JSON",
                    help="only redraw the chart and print the table from a results .json (written next to the .md)")
    a = ap.parse_args()
    if a.chart_from:
        data = json.loads(Path(a.chart_from).read_text())
        res = Results(data["proxies"])
        for v in data["values"]:
            for x, noisy in zip(v["runs"], v["noisy"]):
                better = next(r[2] for r in data["rows"] if r[0] == v["workload"] and r[1] == v["metric"])
                res.add(v["workload"], v["metric"], better, v["proxy"], x, noisy)
        res.rows = [tuple(r) for r in data["rows"]]
        with tempfile.TemporaryDirectory() as t:
            err = write_chart(res, Path(a.chart_from).with_suffix(".png"), Path(t))
        print(res.table())
        print(err or f"wrote {Path(a.chart_from).with_suffix('.png')}")
        return 0 if err is None else 1
    if a.quick:
        defaults = dict(quiet_wait=0.0, bulk_bytes=256 * MIB, reps=1, hs_seconds=0.8, ka_seconds=2, idle_conns=500)
        a.tls12 = False  # quick: TLS 1.3 bulk only
    else:
        defaults = dict(quiet_wait=10.0, bulk_bytes=2 * GIB, reps=3, hs_seconds=4.0, ka_seconds=8,
                        idle_conns=10000 if a.full else 2000)
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    only = {w.strip() for w in a.only.split(",") if w.strip()}
    unknown = only - {"bulk", "handshake", "keepalive", "idle", "ktls"}
    if unknown:
        ap.error(f"unknown workload(s) {', '.join(sorted(unknown))}")

    atexit.register(cleanup)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    ensure_packages()
    proxies = ["ztproxy-userspace", "ztproxy-openssl"]
    if Path("/proc/net/tls_stat").exists():
        proxies.append("ztproxy-kernel")
    proxies += ["nginx", "haproxy"]
    if a.proxies:
        want = [p.strip() for p in a.proxies.split(",")]
        proxies = [p for p in proxies if p in want]
    tmp = Path(tempfile.mkdtemp(prefix="ztp-bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    b = Bench(a, tmp)
    res = Results(proxies)
    started = time.monotonic()
    mode = "quick" if a.quick else ("full" if a.full else "default")
    print(f"ztproxy bench ({mode}): {', '.join(proxies)}; workloads {', '.join(sorted(only))}", flush=True)
    try:
        for name, title, fn in (("bulk", "bulk transfers", run_bulk), ("handshake", "full handshakes", run_handshakes),
                                ("keepalive", "keep-alive requests (wrk)", run_keepalive),
                                ("idle", "idle connections", run_idle),
                                ("ktls", "kTLS splice route (functional, in a kTLS kernel)", run_ktls)):
            if name not in only:
                continue
            print(f"{title} ...", flush=True)
            try:
                fn(b, res, proxies)
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
                b.anomalies.append(f"{title}: aborted: {e}")
                print(f"  {title} aborted: {e}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
    finally:
        cleanup()
    elapsed = time.monotonic() - started

    table = res.table()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    chart_err = write_chart(res, png, tmp)
    md = [
        f"# ztproxy benchmark ({mode} run)",
        "",
        f"{datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}, {elapsed:.0f} s, "
        f"`tests/bench/run_bench.py {' '.join(sys.argv[1:])}`",
        "",
        "Every proxy: one worker, pure TLS terminator in front of the same plaintext backend "
        "(bench_backend), same certificate, client offering one version and one cipher "
        "(AES-128-GCM). ↑ higher is better, ↓ lower is better. Values are medians of "
        f"{a.reps} run(s) (idle: 1 run). Ratio columns: ztproxy variant / best of nginx and HAProxy "
        "(for ↓ metrics a ratio below 1 means ztproxy is cheaper); userspace/openssl: ztproxy's own record "
        "layer against its OpenSSL record path in the same run, for the CPU rows (below 1: userspace is cheaper).",
        "",
        table,
        "",
        "## Machine",
        "",
        *machine(b),
        "",
        "## Set-up",
        "",
        f"- bulk: {a.bulk_bytes / MIB:.0f} MiB per run over one connection (download: backend sends, upload: client "
        "sends and the backend acks the last byte); CPU-s/GB is the proxy tree's utime+stime per 10^9 payload bytes",
        f"- handshakes: bench_client, {a.hs_threads} threads, {a.hs_seconds:g} s per run, no session reuse, "
        "each connection does one 16-byte echo round trip and an orderly close; server sends its default "
        "session tickets",
        f"- keep-alive: wrk -t1 -c{a.wrk_conns} -d{a.ka_seconds}s over TLS 1.3 AES-128-GCM, 1 KiB response body",
        f"- idle: {a.idle_conns} TLS 1.3 connections, handshake done, no application data; PSS delta / N",
        "- ztproxy: quick mode `--workers 1 --record-path userspace|openssl --log-level warn`, access log to "
        "/dev/null; nginx: stream module, `worker_processes 1`, defaults otherwise (proxy_buffer_size 16k); "
        "HAProxy: `mode tcp`, `nbthread 1`, defaults otherwise (tune.bufsize 16k)",
        "",
        *(["## kTLS splice route: bytes through user space (functional, not timed)", "", *b.ktls_lines, ""]
          if b.ktls_lines else []),
        "## Chart",
        "",
        f"![relative performance]({png.name})" if chart_err is None else f"(no chart: {chart_err})",
        "",
        "## Anomalies",
        "",
        *([f"- {x}" for x in b.anomalies] or ["- none"]),
        "",
        "## Runs",
        "",
        *[f"- {d}" for d in res.details],
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    out.with_suffix(".json").write_text(json.dumps({
        "mode": mode, "proxies": res.proxies, "rows": res.rows, "anomalies": b.anomalies, "runs": res.details,
        "values": [{"workload": k[0], "metric": k[1], "proxy": p, "runs": [x for x, _ in v],
                    "noisy": [n for _, n in v]} for k, d in res.values.items() for p, v in d.items()],
    }, indent=1, ensure_ascii=False))
    print()
    print(table)
    print()
    if b.anomalies:
        print("anomalies:")
        for x in b.anomalies:
            print(f"  - {x}")
    print(f"wrote {out.with_suffix('.md')}" + (f" and {png}" if chart_err is None else f" ({chart_err})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
