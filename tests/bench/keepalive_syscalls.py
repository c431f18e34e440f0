#!/usr/bin/env python3
"""System calls, io_uring requests and TCP segments per keep-alive request, ztproxy next to nginx and HAProxy.

    tests/bench/keepalive_syscalls.py [--build-dir build] [--seconds 3] [--wrk-conns 32]
                                      [--proxies ztproxy-userspace,ztproxy-openssl,nginx,haproxy]
                                      [--no-perf] [--no-netns]

The workload is run_bench.py's keep-alive row (its helpers start the proxies, the backend and wrk):
wrk -t1 -c32, GET / of bench_backend's `http` mode (1 KiB body) over TLS 1.3 AES-128-GCM, every
proxy one worker, same certificate. Requests = wrk's reported total. Per proxy:

- strace: the proxy under `strace -f -c`, once idle for --seconds and once under wrk for --seconds;
  (loaded - idle) / requests per system call. ptrace stops the proxy at every call, so what depends
  on batching (calls per wait) is shown for a slowed proxy; the per-event calls are not affected.
- perf (untraced proxy; kernel tracepoints, no ptrace): every system call (raw_syscalls:sys_enter),
  io_uring_enter, mprotect and epoll_wait entries, and io_uring requests (io_uring_submit_req),
  internal poll arms and completions, counted over the wrk run only, / requests; for ztproxy also
  the submissions per io_uring opcode (`perf record` of io_uring_submit_req). These are the rows to
  believe for batching-dependent counts.
- TCP segments: `nstat -asz` TcpOutSegs/TcpInSegs deltas over the perf pass's wrk run. By default the
  whole measurement runs in its own network namespace (`unshare -n`, root), so only its own loopback
  traffic counts. On loopback every segment is counted once as Out (sender) and once as In
  (receiver): OutSegs / requests is the number of segments on the wire per request, both legs
  (client<->proxy, proxy<->backend) and both directions together. The split by leg and direction
  comes from the sockets' own segs_out (`ss -ti`, sampled every 0.2 s; the share, not the total).

Prints markdown. Not a test: numbers are reported, never asserted.
"""
from __future__ import annotations

import argparse
import atexit
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench as rb  # noqa: E402  (the bench's proxies, backend, wrk workload, certificates, ports)
from handshake_syscalls import parse_strace_summary  # noqa: E402

PROXIES = ("ztproxy-userspace", "ztproxy-openssl", "nginx", "haproxy")
PERF_EVENTS = {
    "raw_syscalls:sys_enter": "all system calls",
    "syscalls:sys_enter_io_uring_enter": "io_uring_enter",
    "syscalls:sys_enter_mprotect": "mprotect",
    "syscalls:sys_enter_epoll_wait": "epoll_wait",
    "syscalls:sys_enter_epoll_pwait": "epoll_pwait",
    "io_uring:io_uring_submit_req": "io_uring requests submitted",
    "io_uring:io_uring_poll_arm": "io_uring internal poll arms",
    "io_uring:io_uring_complete": "io_uring completions",
}
SEG_RE = re.compile(r"\bsegs_out:(\d+)")
OPCODE_RE = re.compile(r"opcode (\w+)")


def proxy_pids(runner: rb.subprocess.Popen, traced: bool) -> list[int]:
    """The proxy's processes: everything under `timeout` (and under strace when traced)."""
    pids = rb.tree(runner.pid)[1:]  # [0] is timeout
    if traced:
        pids = pids[1:]  # strace itself
    return pids


def nstat() -> dict[str, int]:
    r = rb.sh(["nstat", "-asz", "TcpOutSegs", "TcpInSegs"])
    return {f[0]: int(f[1]) for f in (l.split() for l in r.stdout.splitlines()) if len(f) >= 2 and f[1].isdigit()}


class LegSampler:
    """segs_out of every established loopback socket of one run, by leg and direction (ss -ti)."""

    def __init__(self, port: int, bport: int):
        self.port, self.bport = port, bport
        self.last: dict[tuple[str, str], int] = {}  # (local, peer) -> segs_out, cumulative per socket
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            out = rb.sh(["ss", "-tinH", "state", "established"]).stdout
            key = None
            for line in out.splitlines():
                f = line.split()
                if not line[:1].isspace() and len(f) >= 4:  # "Recv-Q Send-Q local peer", then its details
                    key = (f[-2], f[-1])
                elif key and (m := SEG_RE.search(line)):
                    self.last[key] = max(self.last.get(key, 0), int(m.group(1)))
                    key = None

    def shares(self) -> dict[str, float]:
        names = {f":{self.port}": ("proxy->client", "client->proxy"), f":{self.bport}": ("backend->proxy",
                                                                                        "proxy->backend")}
        by: dict[str, int] = {}
        for (local, peer), n in self.last.items():
            for suffix, (from_local, from_peer) in names.items():
                if local.endswith(suffix):
                    by[from_local] = by.get(from_local, 0) + n
                elif peer.endswith(suffix):
                    by[from_peer] = by.get(from_peer, 0) + n
        total = sum(by.values()) or 1
        return {k: v / total for k, v in by.items()}


def one_run(b: rb.Bench, kind: str, *, load: bool, mode: str) -> dict:
    """mode "strace": the proxy under strace -f -c (idle or loaded); mode "perf": untraced, perf
    stat over the wrk run, nstat deltas and the per-leg segment shares."""
    a = b.args
    out = b.tmp / f"strace-{kind}-{b.run_counter}-{int(load)}.txt"
    be, bport = b.start_backend(["http"])
    px = perf = rec = None
    res: dict = {}
    try:
        port, log, argv = b.proxy_command(kind, "ecdsa", bport)
        if mode == "strace":
            argv = ["strace", "-f", "-c", "-o", str(out)] + argv
        with open(log, "wb") as logf:
            px = rb.spawn(b.proxy_cpu() + argv, limit_s=600, stdout=subprocess.DEVNULL, stderr=logf)
        rb.wait_port(port, px, kind, log, timeout=30)
        time.sleep(0.3)  # the readiness probe's connection ends; nginx's worker is up
        pids = proxy_pids(px, mode == "strace")
        if mode == "perf" and a.perf:
            perf_out = b.tmp / f"perf-{kind}-{b.run_counter}.txt"
            perf = rb.spawn(["perf", "stat", "-x", ",", "-o", str(perf_out), "-e", ",".join(PERF_EVENTS),
                             "-p", ",".join(map(str, pids))], limit_s=600)
            if kind.startswith("ztproxy"):  # which io_uring operations: one record per submission
                rec_out = b.tmp / f"perf-{kind}-{b.run_counter}.data"
                rec = rb.spawn(["perf", "record", "-q", "-e", "io_uring:io_uring_submit_req", "-o", str(rec_out),
                                "-p", ",".join(map(str, pids))], limit_s=600, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # perf attaches asynchronously; it has no readiness signal
        legs = LegSampler(port, bport)
        seg0 = nstat()
        if load:
            legs.thread.start()
            env = dict(os.environ, OPENSSL_CONF=str(b.wrk_conf))
            rc, wout, werr = rb.run_tool(b.load_cpu() + b.wrk_keepalive(port, a.seconds), limit_s=a.seconds + 60,
                                         env=env)
            legs.stop.set()
            legs.thread.join()
            w = rb.parse_wrk(wout)
            if rc != 0 or not w["requests"] or w["socket_errors"] or w["non2xx"]:
                sys.exit(f"{kind}: wrk rc={rc} {w} {werr.strip()[-300:]}")
            res["requests"] = w["requests"]
            res["legs"] = legs.shares()
        else:
            time.sleep(a.seconds)
        seg1 = nstat()
        res["segs"] = {k: seg1.get(k, 0) - seg0.get(k, 0) for k in seg1}
        if perf:
            # perf stat -p runs under `timeout`: SIGINT perf itself so that it prints its counts.
            os.kill(proxy_pids(perf, False)[0], signal.SIGINT)
            perf.wait(timeout=30)
            res["perf"] = parse_perf(perf_out.read_text())
        if rec:
            os.kill(proxy_pids(rec, False)[0], signal.SIGINT)
            rec.wait(timeout=30)
            trace = rb.sh(["perf", "script", "-i", str(rec_out), "-F", "trace"]).stdout
            res["opcodes"] = dict(Counter(m.group(1) for m in OPCODE_RE.finditer(trace)))
        # SIGTERM to the proxy itself (nginx's master stops its worker), not strace, so that strace
        # sees every tracee exit and writes its summary.
        os.kill(pids[0], signal.SIGTERM)
        px.wait(timeout=60)
    finally:
        rb.stop(perf)
        rb.stop(rec)
        rb.stop(px)
        rb.stop(be)
    b.check_log(kind, log, "keepalive_syscalls")
    if mode == "strace":
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        res["calls"] = parse_strace_summary(out.read_text())
    return res


def parse_perf(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[2] in PERF_EVENTS and f[0].isdigit():
            out[PERF_EVENTS[f[2]]] = int(f[0])
    return out


def measure(b: rb.Bench, kind: str) -> dict:
    idle = one_run(b, kind, load=False, mode="strace")
    loaded = one_run(b, kind, load=True, mode="strace")
    n = loaded["requests"]
    calls = {k: (loaded["calls"].get(k, 0) - idle["calls"].get(k, 0)) / n
             for k in set(idle["calls"]) | set(loaded["calls"])}
    perf = one_run(b, kind, load=True, mode="perf")
    m = perf["requests"]
    return {"strace_requests": n, "calls": calls, "perf_requests": m,
            "perf": {k: v / m for k, v in perf.get("perf", {}).items()},
            "opcodes": {k: v / m for k, v in perf.get("opcodes", {}).items()},
            "out_segs": perf["segs"].get("TcpOutSegs", 0) / m, "in_segs": perf["segs"].get("TcpInSegs", 0) / m,
            "legs": perf["legs"]}


def table(head: str, rows: list[tuple[str, list[str]]], kinds: list[str]) -> list[str]:
    out = [f"| {head} | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    out += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    return out


def report(r: dict[str, dict], kinds: list[str]) -> str:
    f2 = "{:.2f}".format
    lines = ["### System calls per request (`strace -f -c`, loaded minus idle, / requests)", ""]
    names = sorted({k for d in r.values() for k, v in d["calls"].items() if abs(v) >= 0.005},
                   key=lambda k: -max(r[p]["calls"].get(k, 0) for p in kinds))
    rows = [(k, [f2(r[p]["calls"].get(k, 0)) for p in kinds]) for k in names]
    rows.append(("**system calls**", [f"**{f2(sum(r[p]['calls'].values()))}**" for p in kinds]))
    rows.append(("requests (wrk, under strace)", [str(r[p]["strace_requests"]) for p in kinds]))
    lines += table("system call", rows, kinds)
    if any(r[p]["perf"] for p in kinds):
        lines += ["", "### Untraced proxy, perf tracepoints over the wrk run, / requests", ""]
        rows = [(name, [f2(r[p]["perf"].get(name, 0)) for p in kinds]) for name in PERF_EVENTS.values()]
        ops = sorted({k for p in kinds for k in r[p]["opcodes"]}, key=lambda k: -max(r[p]["opcodes"].get(k, 0) for p in kinds))
        rows += [(f"  io_uring {k} (perf record)", [f2(r[p]["opcodes"].get(k, 0)) for p in kinds]) for k in ops]
        rows.append(("requests (wrk, untraced)", [str(r[p]["perf_requests"]) for p in kinds]))
        lines += table("event", rows, kinds)
    lines += ["", "### TCP segments per request (`nstat -asz` deltas over the untraced wrk run, / requests)", ""]
    rows = [("TcpOutSegs (= segments on the wire, all legs)", [f2(r[p]["out_segs"]) for p in kinds]),
            ("TcpInSegs (the same segments, received)", [f2(r[p]["in_segs"]) for p in kinds])]
    for leg in ("client->proxy", "proxy->client", "proxy->backend", "backend->proxy"):
        rows.append((f"  {leg} (share of segs_out x TcpOutSegs)",
                     [f2(r[p]["legs"].get(leg, 0) * r[p]["out_segs"]) for p in kinds]))
    lines += table("segments", rows, kinds)
    return "\n".join(lines)


def enter_netns() -> None:
    """Re-run this script in a new network namespace with only loopback up, so that nstat's
    counters are this measurement's own traffic (the host is shared)."""
    cmd = "ip link set lo up && exec " + " ".join(map(shlex.quote, [sys.executable, *sys.argv, "--in-netns"]))
    os.execvp("unshare", ["unshare", "-n", "sh", "-c", cmd])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=str(rb.ROOT / "build"))
    ap.add_argument("--ztproxy", default=None, help="ztproxy binary (default: BUILD_DIR/ztproxy)")
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--seconds", type=int, default=3, help="wrk duration and idle baseline, per run")
    ap.add_argument("--wrk-conns", type=int, default=32)
    ap.add_argument("--no-perf", dest="perf", action="store_false", help="skip the perf tracepoint counts")
    ap.add_argument("--no-netns", dest="netns", action="store_false",
                    help="stay in the host's network namespace (nstat then counts everyone's TCP)")
    ap.add_argument("--out", default=None, help="also write the markdown here, with the command line")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--no-pin", action="store_true")
    a = ap.parse_args()
    kinds = [k for k in a.proxies.split(",") if k]
    if not a.in_netns:
        rb.ensure_packages()  # before the namespace: apt needs the network
        if a.netns and os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
            enter_netns()
    a.perf = a.perf and shutil.which("perf") is not None and Path("/sys/kernel/tracing/events/io_uring").exists()
    atexit.register(rb.cleanup)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, rb._on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="ztp-ka-syscalls-"))
    atexit.register(shutil.rmtree, tmp, True)
    b = rb.Bench(a, tmp)
    r = {}
    for kind in kinds:
        print(f"{kind} ...", file=sys.stderr, flush=True)
        r[kind] = measure(b, kind)
    rb.cleanup()
    text = (f"Per keep-alive request: wrk -t1 -c{a.wrk_conns} -d{a.seconds}s, 1 KiB HTTP/1.1 responses, TLS 1.3 "
            f"AES-128-GCM, one proxy worker; {'own network namespace' if a.in_netns else 'host network namespace'}"
            f"; the {a.wrk_conns} handshakes and closes are included.\n\n" + report(r, kinds) + "\n")
    if b.anomalies:
        text += "\nanomalies:\n" + "\n".join(f"- {x}" for x in b.anomalies) + "\n"
    print(text, end="")
    if a.out:
        argv = [x for x in sys.argv[1:] if x != "--in-netns"]
        Path(a.out).write_text(f"# System calls, io_uring requests and TCP segments per keep-alive request\n\n"
                               f"{time.strftime('%Y-%m-%d %H:%M %Z')}, ztproxy {b.ztproxy_built}, "
                               f"`tests/bench/keepalive_syscalls.py {' '.join(map(shlex.quote, argv))}`\n\n" + text)


if __name__ == "__main__":
    main()
