#!/usr/bin/env python3
"""System calls per full handshake of the real proxies, ztproxy next to nginx and HAProxy (`strace -c -f`).

    tests/bench/handshake_syscalls.py [--build-dir build] [-n 500]
                                      [--proxies ztproxy-userspace,ztproxy-openssl,nginx,haproxy]
                                      [--cert ecdsa|rsa] [--tls 1.3|1.2] [--extra "ARGS"]

For each proxy: run_bench.py's configuration of it (one worker; ztproxy in quick mode with
`--record-path PATH`, nginx stream + ssl, HAProxy mode tcp) under `strace -f -c`, in front of
bench_backend's echo, once with no handshakes and once with N (bench_client `handshakes N`: full
handshakes, each with one 16-byte echo round trip, no session reuse). The difference divided by N
is the proxy's system calls per handshake, which unlike CPU time does not move when the machine is
busy. io_uring operations are not system calls: they show only as their `io_uring_enter`s; with
perf available the rows in parentheses count ztproxy's from the kernel's io_uring tracepoints
(requests submitted, polls armed internally, completions). --extra adds `ztproxy run` arguments.
Prints a markdown table (per system call, per proxy). Not a test: numbers are reported, never
asserted.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench  # noqa: E402  (the bench's process bookkeeping, certificates and port helpers)

STRACE_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


PERF_EVENTS = ("io_uring:io_uring_submit_req", "io_uring:io_uring_poll_arm", "io_uring:io_uring_complete")


def parse_perf(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[2] in PERF_EVENTS and f[0].isdigit():
            out["(" + f[2].split(":")[1] + ")"] = int(f[0])
    return out


def parse_strace_summary(text: str) -> dict[str, int]:
    calls = {}
    for line in text.splitlines():
        m = STRACE_LINE.match(line)
        if m and m.group(2) != "total":
            calls[m.group(2)] = int(m.group(1))
    return calls


def traced_run(b: run_bench.Bench, a, kind: str, n: int) -> dict[str, int]:
    out = b.tmp / f"strace-{kind}-{n}.txt"
    backend, bport = b.start_backend(["echo"])
    proxy = None
    try:
        port, log, argv = b.proxy_command(kind, a.cert, bport)
        if kind.startswith("ztproxy"):
            argv += shlex.split(a.extra)
        with open(log, "wb") as logf:
            proxy = run_bench.spawn(["strace", "-f", "-c", "-o", str(out), *argv], limit_s=600, stderr=logf)
        run_bench.wait_port(port, proxy, kind, log, timeout=30)
        time.sleep(0.3)  # the readiness probe's connection ends; nginx's worker is up
        strace_pid = next(int(p) for p in Path(f"/proc/{proxy.pid}/task/{proxy.pid}/children").read_text().split())
        proxy_pid = int(Path(f"/proc/{strace_pid}/task/{strace_pid}/children").read_text().split()[0])
        perf = None
        if n and a.perf and kind.startswith("ztproxy"):
            # io_uring operations are not system calls: count them (and the polls io_uring arms
            # internally) with the kernel's tracepoints, over the client's run only.
            perf = run_bench.spawn(["perf", "stat", "-x", ",", "-o", str(b.tmp / f"perf-{kind}.txt"), "-e",
                                    ",".join(PERF_EVENTS), "-p", str(proxy_pid)], limit_s=600)
            time.sleep(0.5)  # perf attaches asynchronously; it has no readiness signal
        if n:
            rc, stdout, stderr = run_bench.run_tool(
                [str(b.client_bin), "handshakes", str(n), "--connect", f"127.0.0.1:{port}", "--tls", a.tls,
                 "--threads", "1", "--duration", "600"], limit_s=660)
            if rc != 0 or f'"handshakes":{n}' not in stdout.replace(" ", ""):
                sys.exit(f"{kind}: bench_client failed ({rc}): {stdout[-400:]} {stderr[-400:]}")
        if perf:
            os.kill(next(int(p) for p in Path(f"/proc/{perf.pid}/task/{perf.pid}/children").read_text().split()),
                    signal.SIGINT)
            perf.wait(timeout=30)
        # SIGTERM to the proxy itself (strace's child; nginx's master stops its worker), so that
        # strace sees every tracee exit and writes its summary.
        os.kill(proxy_pid, signal.SIGTERM)
        proxy.wait(timeout=60)
    finally:
        run_bench.stop(proxy)
        run_bench.stop(backend)
    b.check_log(kind, log, "handshake_syscalls")
    deadline = time.monotonic() + 10
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    calls = parse_strace_summary(out.read_text())
    perf_out = b.tmp / f"perf-{kind}.txt"
    if n and perf_out.exists():
        calls.update(parse_perf(perf_out.read_text()))
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=str(run_bench.ROOT / "build"))
    ap.add_argument("-n", type=int, default=500, help="handshakes in the measured run")
    ap.add_argument("--proxies", default="ztproxy-userspace,ztproxy-openssl,nginx,haproxy")
    ap.add_argument("--cert", choices=("ecdsa", "rsa"), default="ecdsa")
    ap.add_argument("--tls", choices=("1.3", "1.2"), default="1.3")
    ap.add_argument("--extra", default="", help="more `ztproxy run` arguments, e.g. \"--tls13-tickets 2\"")
    ap.add_argument("--no-perf", dest="perf", action="store_false",
                    help="skip counting io_uring requests with perf's io_uring tracepoints")
    a = ap.parse_args()
    run_bench.ensure_packages()
    a.perf = a.perf and run_bench.shutil.which("perf") is not None  # the io_uring rows are optional
    # What run_bench.Bench expects of its arguments (strace runs the proxy unpinned).
    a.ztproxy, a.no_pin, a.proxy_cpu, a.load_cpu, a.wrk_conns, a.quiet_wait = None, True, 0, 1, 32, 0
    with tempfile.TemporaryDirectory(prefix="ztp-hs-syscalls-") as t:
        b = run_bench.Bench(a, Path(t))
        per_proxy: dict[str, dict[str, float]] = {}
        kinds = [k for k in a.proxies.split(",") if k]
        try:
            for kind in kinds:
                base = traced_run(b, a, kind, 0)
                full = traced_run(b, a, kind, a.n)
                per_proxy[kind] = {k: (full.get(k, 0) - base.get(k, 0)) / a.n for k in set(base) | set(full)}
        finally:
            run_bench.cleanup()
    names = sorted({k for d in per_proxy.values() for k, v in d.items() if abs(v) >= 0.005},
                   key=lambda k: -max(d.get(k, 0) for d in per_proxy.values()))
    print(f"system calls per handshake ({a.cert}, TLS {a.tls}, {a.n} handshakes with a 16-byte echo, "
          f"difference to a run with none)\n")
    print("| system call | " + " | ".join(kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    for k in names:
        print(f"| {k} | " + " | ".join(f"{per_proxy[p].get(k, 0):.2f}" for p in kinds) + " |")
    print("| **system calls** | " + " | ".join(
        f"**{sum(v for k, v in per_proxy[p].items() if not k.startswith('(')):.2f}**" for p in kinds) + " |")
    if b.anomalies:
        print("\n" + "\n".join(f"- {x}" for x in b.anomalies))


if __name__ == "__main__":
    main()
