#!/usr/bin/env python3
"""User-space instructions per full handshake and per keep-alive request: ztproxy, nginx, HAProxy.

    tests/bench/peer_profile.py [--build-dir build] [--proxies ztproxy-userspace,...]
                                [--handshakes 40] [--tls 1.3|1.2] [--ka-seconds 3,9] [--top 12]
                                [--out FILE.md]

Every proxy runs the bench's own configuration (run_bench.py: one worker, the ECDSA P-256
certificate, AES-128-GCM, TLS 1.3 or, for the handshakes, --tls 1.2; bench_backend behind it) under
`valgrind --tool=callgrind`, which counts the instructions the whole process executes in user
space. Instruction counts do not move with the machine's load, where CPU times on a shared 2-core
host move by 15 % between identical runs; they leave out the kernel (system calls and the TCP work
they cause: keepalive_syscalls.py and handshake_syscalls.py count those).

Each workload runs twice per proxy, a short and a long run, each from start to exit; the
difference divided by the difference in work leaves out start-up, the first fetches and the exit:
- handshakes: bench_client's `handshakes` (one thread, a full handshake and a 16-byte echo per
  connection), --warm and --warm + --handshakes of them;
- keep-alive: wrk -t1 -c4 for the two --ka-seconds, 1 KiB responses (bench_backend `http`); the
  four connections' handshakes are in both runs.

Three adaptations for callgrind, none of which changes the per-connection work: nginx runs with
`master_process off` (the same worker code, without the fork); ztproxy runs from a policy file
equal to the bench's quick-mode command line with `seccomp = "off"` (valgrind's own system calls,
such as its executable translation cache, are outside ztproxy's allow-list); nginx and HAProxy are
stopped with SIGTERM so that callgrind writes its counts at exit, except ztproxy, whose signal
thread does not see SIGTERM under valgrind: it is asked for a dump (`callgrind_control -d`) and
then killed.

Prints markdown (also to --out): per proxy the instructions per unit split by object (libcrypto,
libssl, libc, the proxy's own code, ...) and the functions with the largest exclusive counts.
Not a test: numbers are reported, never asserted.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench as rb  # noqa: E402  (the bench's proxies, backend, certificates, ports)

PROXIES = ("ztproxy-userspace", "ztproxy-openssl", "nginx", "haproxy")


def object_group(obj: str) -> str:
    name = Path(obj).name
    for prefix, group in (("libcrypto", "libcrypto"), ("libssl", "libssl"), ("libc.so", "libc"),
                          ("libc-", "libc"), ("ld-linux", "ld.so"), ("libstdc++", "libstdc++"),
                          ("liburing", "liburing"), ("libpcre", "pcre"), ("libspdlog", "spdlog"),
                          ("libfmt", "fmt")):
        if name.startswith(prefix):
            return group
    if name in ("ztproxy", "nginx", "haproxy"):
        return "proxy's own code"
    return name or "?"


def policy_file(tmp: Path, argv: list[str]) -> Path:
    """ztproxy's quick-mode command line as a policy file, with the seccomp filter off."""
    opt = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    p = tmp / f"ztproxy-{opt['--record-path']}-{time.monotonic_ns()}.toml"
    p.write_text(f"""
[runtime]
workers = {opt['--workers']}
[logging]
level = "{opt['--log-level']}"
[process]
seccomp = "off"
[limits]
max_connections = {opt['--max-connections']}
[[listener]]
name = "bench"
address = "{opt['--listen']}"
  [listener.tls]
  record_path = "{opt['--record-path']}"
  [[listener.tls.certificate]]
  name = "bench"
  cert = "{opt['--cert']}"
  key = "{opt['--key']}"
[[backend]]
name = "bench"
addresses = ["{opt['--backend']}"]
[[route]]
default = true
backend = "bench"
""")
    return p


def callgrind_argv(b: rb.Bench, kind: str, bport: int, out_dir: Path) -> tuple[int, Path, list[str]]:
    port, log, argv = b.proxy_command(kind, "ecdsa", bport)
    if kind.startswith("ztproxy"):
        argv = [argv[0], "run", "-c", str(policy_file(b.tmp, argv))]
    elif kind == "nginx":
        conf = Path(argv[argv.index("-c") + 1])
        conf.write_text(conf.read_text().replace("master_process on;", "master_process off;"))
    return port, log, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.%p", *argv]


NAMED_RE = re.compile(r"^\((\d+)\)(?: (.*))?$")  # "(id) name" or "(id)" (--compress-strings)


def self_costs(path: Path) -> tuple[dict[tuple[str, str], int], int]:
    """(object, function) -> exclusive instructions in one callgrind output file, and its total.

    Read from the file itself: a cost line belongs to the current fn= in the current ob=, except
    the line right after a calls= line, which is the call's inclusive cost (counted in the callee).
    """
    names: dict[tuple[str, str], str] = {}

    def name(kind: str, value: str) -> str:
        m = NAMED_RE.match(value)
        if not m:
            return value
        if m.group(2) is not None:
            names[(kind, m.group(1))] = m.group(2)
        return names.get((kind, m.group(1)), value)

    costs: dict[tuple[str, str], int] = defaultdict(int)
    ob = fn = "?"
    skip_next = False
    total = 0
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    costs[(ob, fn)] += int(parts[1])
                continue
            key, _, value = line.partition("=")
            if key == "ob":
                ob = name("ob", value)
            elif key == "fn":
                fn = name("fn", value)
            elif key in ("cob", "cfn"):
                name(key[1:], value)  # defines the id for later use
            elif key in ("fl", "fi", "fe", "cfi", "cfl"):
                name("fl", value)
            elif key == "calls":
                skip_next = True
            elif key in ("summary", "totals"):
                total = int(value.split()[0]) if value.strip() else total
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split(":", 1)[1].split()[0])
    return costs, total


def profile(files: list[Path]) -> dict[tuple[str, str], int]:
    """(object group, function) -> exclusive instructions, summed over the run's output files."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for f in files:
        costs, total = self_costs(f)
        counted = sum(costs.values())
        if total and abs(counted - total) > total // 100:
            sys.exit(f"{f}: the functions' own costs add up to {counted}, the file's total is {total}")
        for (ob, fn), v in costs.items():
            out[(object_group(ob), fn)] += v
    return out


def one_run(b: rb.Bench, kind: str, work: str, amount: float) -> tuple[dict, float]:
    """The proxy under callgrind from start to exit with `amount` of work; (profile, units done)."""
    out_dir = Path(tempfile.mkdtemp(prefix=f"cg-{kind}-", dir=b.tmp))
    be, bport = b.start_backend(["echo"] if work == "handshake" else ["http"])
    px = None
    try:
        port, log, argv = callgrind_argv(b, kind, bport, out_dir)
        with open(log, "wb") as logf:
            px = rb.spawn(argv, limit_s=900, stdout=subprocess.DEVNULL, stderr=logf)
        rb.wait_port(port, px, kind, log, timeout=180)
        time.sleep(1.0)  # the readiness probe's connection ends
        if work == "handshake":
            r = b.client("handshakes", int(amount), port, "--tls", b.args.tls, "--threads", "1",
                         "--duration", "600", limit_s=900)
            if not r.get("ok") or r.get("handshakes") != int(amount):
                sys.exit(f"{kind}: bench_client {r}")
            done = float(r["handshakes"])
        else:
            env = dict(os.environ, OPENSSL_CONF=str(b.wrk_conf))
            rc, out, err = rb.run_tool(["wrk", "-t1", "-c4", f"-d{int(amount)}s", "--timeout", "30s",
                                        f"https://127.0.0.1:{port}/"], limit_s=amount + 120, env=env)
            w = rb.parse_wrk(out)
            if rc != 0 or not w["requests"] or w["socket_errors"] or w["non2xx"]:
                sys.exit(f"{kind}: wrk rc={rc} {w} {err.strip()[-300:]}")
            done = float(w["requests"])
        time.sleep(1.0)  # the last connections close in the proxy
        pid = rb.tree(px.pid)[-1]  # the proxy under valgrind, the child of `timeout`
        if kind.startswith("ztproxy"):
            # Under valgrind, ztproxy's signal thread never sees SIGTERM (its sigtimedwait does
            # not return for it): ask callgrind for a dump instead, then end the process.
            r = rb.sh(["callgrind_control", "-d", str(pid)], timeout=300)
            if r.returncode != 0:
                sys.exit(f"{kind}: callgrind_control -d failed: {r.stdout[-300:]} {r.stderr[-300:]}")
        else:
            os.kill(pid, signal.SIGTERM)  # a graceful exit: callgrind writes its counts
            px.wait(timeout=300)
    finally:
        rb.stop(px)
        rb.stop(be)
    files = sorted(f for f in out_dir.glob("cg.*") if f.stat().st_size > 0)
    if not files:
        sys.exit(f"{kind}: callgrind wrote nothing (log: {log.read_text(errors='replace')[-500:]})")
    return profile(files), done


def per_unit(short: tuple[dict, float], long: tuple[dict, float]) -> tuple[dict, float]:
    (p0, n0), (p1, n1) = short, long
    if n1 <= n0:
        sys.exit(f"the long run did no more work than the short one ({n1} vs {n0})")
    keys = set(p0) | set(p1)
    return {k: (p1.get(k, 0) - p0.get(k, 0)) / (n1 - n0) for k in keys}, n1 - n0


def report(title: str, unit: str, results: dict[str, tuple[dict, float]], top: int) -> list[str]:
    kinds = list(results)
    groups: dict[str, dict[str, float]] = {k: defaultdict(float) for k in kinds}
    for k, (costs, _) in results.items():
        for (grp, _fn), v in costs.items():
            groups[k][grp] += v
    names = sorted({g for k in kinds for g in groups[k]}, key=lambda g: -max(groups[k][g] for k in kinds))
    names = [g for g in names if max(groups[k][g] for k in kinds) >= 1000]
    lines = [f"### {title}", "", f"Thousands of user-space instructions per {unit} (callgrind, long run − short run, "
             + ", ".join(f"{k}: {results[k][1]:.0f}" for k in kinds) + f" {unit}s apart).", "",
             "| object | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for g in names:
        lines.append(f"| {g} | " + " | ".join(f"{groups[k][g] / 1e3:,.1f}" for k in kinds) + " |")
    totals = {k: sum(groups[k].values()) for k in kinds}
    lines.append("| **total** | " + " | ".join(f"**{totals[k] / 1e3:,.1f}**" for k in kinds) + " |")
    best_peer = min((totals[k] for k in kinds if not k.startswith("ztproxy")), default=0)
    if best_peer:
        lines.append("| ratio to the better peer | " + " | ".join(f"{totals[k] / best_peer:.2f}" for k in kinds) + " |")
    lines.append("")
    for k in kinds:
        costs = results[k][0]
        lines += [f"{k}, the {top} functions with the most exclusive instructions per {unit} (thousands):", "",
                  "| function | object | k instr |", "|---|---|---:|"]
        for (grp, fn), v in sorted(costs.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"| `{fn[:80]}` | {grp} | {v / 1e3:,.1f} |")
        lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=str(rb.ROOT / "build"))
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--only", default="handshake,keepalive")
    ap.add_argument("--warm", type=int, default=5, help="handshakes in the short run")
    ap.add_argument("--handshakes", type=int, default=40, help="more handshakes in the long run")
    ap.add_argument("--ka-seconds", default="3,9", help="wrk durations of the short and the long run")
    ap.add_argument("--tls", choices=("1.3", "1.2"), default="1.3", help="the handshakes' TLS version")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rb.ensure_packages()
    # What run_bench.Bench expects of its arguments (no pinning: callgrind runs one thread anyway).
    a.ztproxy, a.no_pin, a.proxy_cpu, a.load_cpu, a.wrk_conns, a.quiet_wait = None, True, 0, 1, 4, 0
    tmp = Path(tempfile.mkdtemp(prefix="ztp-peer-profile-"))
    b = rb.Bench(a, tmp)
    kinds = [k for k in a.proxies.split(",") if k]
    only = {w for w in a.only.split(",") if w}
    short_s, long_s = (float(x) for x in a.ka_seconds.split(","))
    started = time.monotonic()
    lines = [f"# User-space instructions per handshake and per keep-alive request, against nginx and HAProxy", "",
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"`tests/bench/peer_profile.py {' '.join(sys.argv[1:])}`; "
             f"{rb.first_line(['nginx', '-v'])}, {rb.first_line(['haproxy', '-v'])}, "
             f"{rb.first_line(['openssl', 'version'])}", ""]
    try:
        if "handshake" in only:
            res = {}
            for k in kinds:
                print(f"handshakes: {k} ...", flush=True)
                res[k] = per_unit(one_run(b, k, "handshake", a.warm),
                                  one_run(b, k, "handshake", a.warm + a.handshakes))
            lines += report(f"Full handshake, ECDSA P-256, TLS {a.tls}, with a 16-byte echo", "handshake", res, a.top)
        if "keepalive" in only:
            res = {}
            for k in kinds:
                print(f"keep-alive: {k} ...", flush=True)
                res[k] = per_unit(one_run(b, k, "keepalive", short_s), one_run(b, k, "keepalive", long_s))
            lines += report("Keep-alive request, 1 KiB response, TLS 1.3", "request", res, a.top)
    finally:
        rb.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    lines.append(f"({time.monotonic() - started:.0f} s)")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
