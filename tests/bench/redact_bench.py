#!/usr/bin/env python3
"""What redaction rules cost ztproxy (issue 5): throughput and proxy CPU per GB with 0, 10 and 100
rules on the route, both directions, next to nginx's http sub_filter where that is comparable.

    tests/bench/redact_bench.py [--quick] [--rounds R] [--transfers M] [--stream-mib 64] [...]

Expects build/ztproxy, build/tests/bench/bench_backend and build/tests/bench/bench_client
(`cmake --build build --target ztproxy bench_backend bench_client`). Reuses run_bench.py's process
bookkeeping, /proc accounting and certificates (imported as a module).

The stream: --stream-mib MiB (64) of log-like text generated here (fixed seed), with secrets planted
at a realistic density: in every 64 KiB one card number, plus one more secret in turn (a bearer
token, an AWS access key id, an e-mail address, or one of 100 internal host names). The same stream
is used for every rule set and direction.

Rule sets (every rule direction = "both", mask "*", bounded patterns):
  0      no rules: the route takes the plain userspace relay
  R10    4 regexes (card number, bearer token, AWS key id, e-mail) + 6 host-name literals
  R100   the same 4 regexes + 96 host-name literals
  L10    10 host-name literals only  (what nginx sub_filter can do too)
  L100   100 host-name literals only

ztproxy: one worker, listener `record_path = "userspace"` (`ktls = "auto"`), pinned to --proxy-cpu;
the client (bench_client, TLS 1.3 TLS_AES_128_GCM_SHA256 only) and the backend (bench_backend) on
--load-cpu. Download: the backend sends the stream and half-closes. Upload: the client sends it,
then close_notify (--half-close: the proxy learns at once that the stream ended, so the rewriter's
held-back tail is released without waiting for the 20 ms quiet timer), and the backend acks the last
byte. nginx: http module, `proxy_pass` to the backend serving the stream as an HTTP/1.1 response,
`proxy_buffering off`, `gzip off`, `sub_filter_once off`, `sub_filter_types *`, one `sub_filter` per
literal with a same-length '*' replacement (= ztproxy's mask), client request HTTP/1.0.

Each cell (proxy, rule set, direction) runs --rounds times, interleaved with the other cells (so a
burst of foreign load hits all of them alike); a round starts the proxy, does one VERIFICATION
transfer (SHA-256 of the bytes that arrived, compared with the expected redacted stream computed
here), then --transfers timed transfers. CPU-s/GB is the proxy process tree's utime+stime over the
timed transfers per 10^9 payload bytes; Gbit/s the median transfer. Reported: medians over rounds.

Writes tests/bench/results/redact.md (and .json) and prints the table. Not a test: performance is
reported, never asserted (a failed verification is reported as an anomaly and exits 1).
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run_bench as rb  # noqa: E402  (process bookkeeping, /proc accounting, certificates)

ROOT = rb.ROOT
MIB = rb.MIB
BLOCK = 64 * 1024

# ---------------------------------------------------------------------------------------------
# Rules

REGEX_RULES = [
    # id, pattern (Hyperscan syntax; every one bounded)
    ("card-number", r"\b(?:\d[ -]?){13,16}\b"),
    ("bearer-token", r"Bearer [A-Za-z0-9\-._~+/]{20,256}={0,2}"),
    ("aws-access-key", r"AKIA[0-9A-Z]{16}"),
    # Vectorscan refuses wider bounds here with start-of-match tracking ("Pattern is too large",
    # e.g. a {1,63} or {1,128} domain part): this is the widest e-mail form ztproxy accepts.
    ("email", r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,32}\.[A-Za-z]{2,8}"),
]
SERVICES = ["db", "api", "auth", "billing", "cache", "queue", "search", "ledger", "payments", "reports"]
ENVS = ["prod", "staging", "dr", "eu", "us", "ap", "ci", "qa", "lab", "edge"]
HOSTS = [f"{SERVICES[i % 10]}-{i:02d}.{ENVS[i // 10]}.internal.example.net" for i in range(100)]


def rule_sets() -> dict[str, dict]:
    """name -> {"regex": [(id, pattern)], "literals": [host]}."""
    return {
        "0": {"regex": [], "literals": []},
        "R10": {"regex": REGEX_RULES, "literals": HOSTS[:6]},
        "R100": {"regex": REGEX_RULES, "literals": HOSTS[:96]},
        "L10": {"regex": [], "literals": HOSTS[:10]},
        "L100": {"regex": [], "literals": HOSTS[:100]},
        # diagnosis (--sets): one regex alone
        **{rid: {"regex": [(rid, pat)], "literals": []} for rid, pat in REGEX_RULES},
    }


def toml_str(s: str) -> str:
    return "'" + s + "'" if "'" not in s else json.dumps(s)


def ztproxy_policy(path: Path, port: int, bport: int, cert: Path, key: Path, rs: dict) -> None:
    rules = [(rid, "pattern", pat) for rid, pat in rs["regex"]]
    rules += [(f"host-{i:03d}", "literal", h) for i, h in enumerate(rs["literals"])]
    out = [
        "[runtime]", "workers = 1", "",
        "[logging]", 'level = "warn"', "access_log = true", "",
        "[limits]", "max_connections = 100", "",
        "[[listener]]", 'name = "bench"', f'address = "127.0.0.1:{port}"',
        "  [listener.tls]", '  ktls = "auto"', '  record_path = "userspace"',
        "  [[listener.tls.certificate]]", '  name = "main"', f"  cert = {toml_str(str(cert))}",
        f"  key = {toml_str(str(key))}", "",
        "[[backend]]", 'name = "be"', f'addresses = ["127.0.0.1:{bport}"]', "",
        "[[route]]", "default = true", 'backend = "be"',
    ]
    if rules:
        out.append("rules = [" + ", ".join(f'"{r[0]}"' for r in rules) + "]")
    out.append("")
    for rid, kind, val in rules:
        out += ["[[rule]]", f'id = "{rid}"', 'direction = "both"', f"{kind} = {toml_str(val)}", ""]
    path.write_text("\n".join(out))


# ---------------------------------------------------------------------------------------------
# The stream

WORDS = ("order invoice checkout session cart request response upstream retry timeout latency "
         "customer account profile shipping warehouse inventory catalogue product review rating "
         "token refresh cookie header payload queue worker batch export import report ledger "
         "balance transfer refund dispute webhook callback status pending settled failed ok").split()


def filler_line(rng: random.Random) -> str:
    hh, mm, ss, ms = rng.randrange(24), rng.randrange(60), rng.randrange(60), rng.randrange(1000)
    msg = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 14)))
    return (f'ts=2026-11-22T{hh:02d}:{mm:02d}:{ss:02d}.{ms:03d}Z level={rng.choice(("info", "debug", "warn"))} '
            f'svc={rng.choice(WORDS)} req=r{rng.randrange(1 << 30):x} dur_ms={rng.randrange(2000)} '
            f'msg="{msg}"\n')


def plant(kind: str, i: int, rng: random.Random) -> tuple[str, str, str]:
    """(prefix, secret, suffix): the secret is exactly what the rule's matches cover."""
    if kind == "card":
        d = "4" + "".join(rng.choice("0123456789") for _ in range(15))
        sep = rng.choice([" ", "-", ""])
        card = sep.join(d[k:k + 4] for k in range(0, 16, 4))
        return 'event=charge card="', card, '" status=ok\n'
    if kind == "bearer":
        tok = rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") + "".join(
            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") for _ in range(39))
        return 'event=upstream hdr="Authorization: ', "Bearer " + tok, '" status=ok\n'
    if kind == "aws":
        key = "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
        return "event=s3_put access_key=", key, " status=ok\n"
    if kind == "email":
        user = rng.choice(["alice", "bob", "carol", "dave", "erin"]) + "." + rng.choice(
            ["smith", "jones", "nguyen", "garcia"]) + str(rng.randrange(100))
        return 'event=signup user="', f"{user}@mail.example.org", '" status=ok\n'
    if kind == "host":
        return "event=connect upstream=", HOSTS[i % len(HOSTS)], " status=ok\n"
    raise ValueError(kind)


def make_stream(size: int, seed: int = 5) -> tuple[bytes, list[tuple[int, int, str, str]]]:
    """The stream and its plants: (offset, length, kind, secret)."""
    rng = random.Random(seed)
    pool = [filler_line(rng) for _ in range(4000)]
    parts: list[str] = []
    plants = []
    pos = 0
    others = ["bearer", "aws", "email", "host"]
    nblocks = (size + BLOCK - 1) // BLOCK
    for b in range(nblocks):
        block_end = min(size, (b + 1) * BLOCK)
        kinds = ["card", others[b % 4]]
        rng.shuffle(kinds)
        # two planted lines at random line positions in the block
        slots = sorted(rng.sample(range(10, 80), 2))
        n = 0
        while pos < block_end - 400:
            if kinds and n in slots:
                kind = kinds.pop()
                pre, sec, suf = plant(kind, b // 4, rng)
                plants.append((pos + len(pre), len(sec), kind, sec))
                line = pre + sec + suf
            else:
                line = rng.choice(pool)
            parts.append(line)
            pos += len(line)
            n += 1
        pad = block_end - pos  # end the block exactly: one filler line cut to length
        line = (rng.choice(pool) * 4)[:pad - 1] + "\n" if pad > 1 else "\n" * pad
        parts.append(line)
        pos += len(line)
    data = "".join(parts).encode()
    assert len(data) == size, (len(data), size)
    return data, plants


def expected(data: bytes, plants, rs: dict) -> bytes:
    kinds = set()
    ids = {rid for rid, _ in rs["regex"]}
    if "card-number" in ids:
        kinds.add("card")
    if "bearer-token" in ids:
        kinds.add("bearer")
    if "aws-access-key" in ids:
        kinds.add("aws")
    if "email" in ids:
        kinds.add("email")
    lits = set(rs["literals"])
    out = bytearray(data)
    for off, n, kind, sec in plants:
        if kind in kinds or (kind == "host" and sec in lits):
            out[off:off + n] = b"*" * n
    return bytes(out)


def sanity_check(data: bytes, plants) -> list[str]:
    """Python's re (leftmost-first, not the engine's every-match semantics) as a cross-check: every
    match of a rule lies inside a plant of its kind, and every plant is found."""
    problems = []
    spans = {(off, off + n) for off, n, _, _ in plants}
    text = data.decode()
    for rid, pat in REGEX_RULES:
        for m in re.finditer(pat, text):
            if (m.start(), m.end()) not in spans:
                problems.append(f"{rid} matches outside a plant at {m.start()}: {m.group()[:60]!r}")
                break
    for h in HOSTS:
        for m in re.finditer(re.escape(h), text):
            if (m.start(), m.end()) not in spans:
                problems.append(f"host literal outside a plant at {m.start()}")
                break
    return problems


# ---------------------------------------------------------------------------------------------
# Proxies


def start_ztproxy(b: rb.Bench, rs: dict, bport: int, tag: str):
    port = rb.free_port()
    c, k, _ = b.certs["ecdsa"]
    pol = b.tmp / f"policy-{tag}.toml"
    ztproxy_policy(pol, port, bport, c, k, rs)
    r = rb.sh([str(b.ztproxy), "check", "-c", str(pol)])
    if r.returncode != 0:
        raise RuntimeError(f"ztproxy check {pol} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    log = b.tmp / f"ztproxy-{tag}.log"
    alog = b.tmp / f"ztproxy-{tag}.access"
    with open(log, "wb") as logf, open(alog, "wb") as af:
        p = rb.spawn(b.proxy_cpu() + [str(b.ztproxy), "run", "-c", str(pol)], limit_s=900, stdout=af, stderr=logf)
    rb.wait_port(port, p, "ztproxy", log)
    time.sleep(0.1)
    return p, port, log, alog


def start_nginx(b: rb.Bench, rs: dict, bport: int, tag: str):
    port = rb.free_port()
    c, k, _ = b.certs["ecdsa"]
    d = b.tmp / f"nginx-{tag}"
    d.mkdir()
    log = b.tmp / f"nginx-{tag}.log"
    subs = "\n".join(f"            sub_filter '{h}' '{'*' * len(h)}';" for h in rs["literals"])
    conf = d / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {log} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    gzip off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {c};
        ssl_certificate_key {k};
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
        location / {{
            proxy_pass http://127.0.0.1:{bport};
            proxy_buffering off;
            sub_filter_once off;
            sub_filter_types *;
{subs}
        }}
    }}
}}
""")
    with open(log, "ab") as logf:
        p = rb.spawn(b.proxy_cpu() + ["nginx", "-p", str(d), "-c", str(conf), "-e", str(log)], limit_s=900,
                     stdout=subprocess.DEVNULL, stderr=logf)
    rb.wait_port(port, p, "nginx", log)
    time.sleep(0.1)
    return p, port, log, None


# ---------------------------------------------------------------------------------------------
# One cell, one round


def read_line(p: subprocess.Popen, timeout: float) -> str:
    """One line from p's stdout, or what arrived within timeout seconds."""
    fd = p.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").split("\n")[0]


def run_round(b: rb.Bench, a, proxy: str, rsname: str, rs: dict, direction: str, stream: Path, nbytes: int,
              want_sha: str, rnd: int) -> dict:
    tag = f"{proxy}-{rsname}-{direction}-{rnd}"
    if direction == "download":
        mode = ["httpfile" if proxy == "nginx" else "file", str(stream)]
    else:
        mode = ["--sha256", "sink", str(nbytes)]
    be, bport = b.start_backend(mode)
    px = None
    out = {"proxy": proxy, "rules": rsname, "direction": direction, "round": rnd}
    try:
        px, port, log, alog = (start_nginx if proxy == "nginx" else start_ztproxy)(b, rs, bport, tag)
        extra = ["--max-seconds", str(a.max_run_seconds)]
        if direction == "download":
            extra += ["--http"] if proxy == "nginx" else []
        else:
            extra += ["--file", str(stream), "--half-close"]
        # Verification transfer (not timed): SHA-256 of what arrived.
        r = b.client(direction, nbytes, port, *extra, *(["--sha256"] if direction == "download" else []),
                     limit_s=a.max_run_seconds + 30)
        if direction == "download":
            got = r.get("sha256")
        else:
            line = read_line(be, 30.0).split()  # "conn BYTES SHA" (first connection only)
            got = line[2] if len(line) == 3 and int(line[1]) == nbytes else f"backend said {line}"
        out["verify_ok"] = bool(r.get("ok")) and got == want_sha
        out["verify"] = {"client": r, "got": got, "want": want_sha}
        # Timed transfers.
        b.wait_quiet()
        c0 = rb.cpu_seconds(px.pid)
        lc = rb.LoadCore(a.load_cpu, a.proxy_cpu if b.pin else -1, px.pid)
        runs = []
        for _ in range(a.transfers):
            r = b.client(direction, nbytes, port, *extra, limit_s=a.max_run_seconds + 30)
            if not r.get("ok"):
                out["error"] = r
                break
            runs.append(r)
        cpu = rb.cpu_seconds(px.pid) - c0
        out["load_pct"], out["foreign_pct"] = lc.busy_pct(), lc.foreign_pct()
        b.note_foreign(out["foreign_pct"])
    finally:
        rb.stop(px)
        rb.stop(be)
    b.check_log(proxy, log, tag)
    if alog and alog.exists():
        lines = [l for l in alog.read_text(errors="replace").splitlines() if l.startswith("access")]
        # The readiness probe (a TCP connect without TLS) is the first line: close=handshake_failed.
        probe = [l for l in lines if 'version=""' in l and "close=handshake_failed" in l and "bytes_up=0" in l]
        lines = [l for l in lines if l not in probe]
        out["access_first"] = lines[0] if lines else ""
        odd = [l for l in lines if "close=client_close" not in l and "close=backend_close" not in l]
        if len(probe) != 1:
            odd.append(f"{len(probe)} probe-like handshake_failed lines (expected 1)")
        if odd:
            out["access_odd"] = odd[:3]
    if runs and "error" not in out:
        gb = sum(r["bytes"] for r in runs) / 1e9
        out["gbps"] = statistics.median(r["gbps"] for r in runs)
        out["cpu_s_per_gb"] = cpu / gb
        out["cpu_s"] = cpu
        out["transfers"] = len(runs)
    return out


# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def fmt(v):
    return "n/a" if v is None else rb.fmt(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round x 2 transfers per cell (about a minute)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per cell, interleaved (default 3)")
    ap.add_argument("--transfers", type=int, default=None, help="timed transfers per round (default 8)")
    ap.add_argument("--stream-mib", type=int, default=64)
    ap.add_argument("--sets", default="0,R10,R100,L10,L100",
                    help="rule sets: 0,R10,R100,L10,L100 and, for diagnosis, one regex alone: "
                         + ",".join(r for r, _ in REGEX_RULES))
    ap.add_argument("--no-nginx", action="store_true")
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    ap.add_argument("--ztproxy", default=None, help="ztproxy binary (default: BUILD_DIR/ztproxy, copied)")
    ap.add_argument("--max-run-seconds", type=int, default=60, help="bound for one transfer")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="seconds to wait before each timed round for the host to be idle (default 5; quick 0)")
    ap.add_argument("--quiet-threshold", type=float, default=20.0)
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--out", default=str(rb.RESULTS / "redact"), help="output prefix (.md, .json)")
    a = ap.parse_args()
    dflt = dict(rounds=1, transfers=2, quiet_wait=0.0) if a.quick else dict(rounds=3, transfers=8, quiet_wait=5.0)
    for k, v in dflt.items():
        if getattr(a, k) is None:
            setattr(a, k, v)

    atexit.register(rb.cleanup)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, rb._on_signal)
    signal.signal(signal.SIGHUP, rb._on_signal)

    tmp = Path(tempfile.mkdtemp(prefix="ztp-redact-bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    b = rb.Bench(a, tmp)
    have_nginx = bool(shutil.which("nginx")) and not a.no_nginx

    t0 = time.monotonic()
    nbytes = a.stream_mib * MIB
    data, plants = make_stream(nbytes)
    problems = sanity_check(data, plants)
    if problems:
        sys.exit("generated stream is not clean: " + "; ".join(problems))
    stream = tmp / "stream.txt"
    stream.write_bytes(data)
    sets = {k: v for k, v in rule_sets().items() if k in a.sets.split(",")}
    want = {k: hashlib.sha256(expected(data, plants, v)).hexdigest() for k, v in sets.items()}
    counts = {}
    for k, v in sets.items():
        e = expected(data, plants, v)
        counts[k] = (sum(1 for off, n, _, _ in plants if e[off:off + n] != data[off:off + n]),
                     sum(n for off, n, _, _ in plants if e[off:off + n] != data[off:off + n]))
    print(f"stream: {nbytes / MIB:.0f} MiB, {len(plants)} planted secrets "
          f"({nbytes / len(plants) / 1024:.0f} KiB apart on average), generated in {time.monotonic() - t0:.1f} s; "
          f"rounds {a.rounds} x {a.transfers} timed transfers per cell", flush=True)

    cells = []
    for rsname in sets:
        for direction in ("download", "upload"):
            cells.append(("ztproxy", rsname, direction))
    if have_nginx:
        for rsname in sets:
            if not sets[rsname]["regex"]:  # sub_filter: literals only, responses only
                cells.append(("nginx", rsname, "download"))

    results: list[dict] = []
    started = time.monotonic()
    busy_samples = []
    try:
        for rnd in range(a.rounds):
            busy_samples.append(rb.system_busy_pct(1.0))
            for proxy, rsname, direction in cells:
                try:
                    r = run_round(b, a, proxy, rsname, sets[rsname], direction, stream, nbytes, want[rsname], rnd)
                except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
                    r = {"proxy": proxy, "rules": rsname, "direction": direction, "round": rnd, "error": str(e)}
                results.append(r)
                if "error" in r:
                    b.anomalies.append(f"{proxy} {rsname} {direction} round {rnd}: {str(r['error'])[:500]}")
                if r.get("verify_ok") is False:
                    b.anomalies.append(f"{proxy} {rsname} {direction} round {rnd}: VERIFICATION FAILED: "
                                       f"{json.dumps(r.get('verify'))[:600]}")
                if r.get("access_odd"):
                    b.anomalies.append(f"{proxy} {rsname} {direction} round {rnd}: access log: {r['access_odd'][0][:400]}")
                print(f"  round {rnd} {proxy:7s} {rsname:4s} {direction:8s}: "
                      + (f"{r['gbps']:.2f} Gbit/s, {r['cpu_s_per_gb']:.3f} CPU-s/GB, verified "
                         f"{'ok' if r.get('verify_ok') else 'FAILED'}, load CPU {r['load_pct']:.0f}%, foreign on "
                         f"proxy CPU {r['foreign_pct']:.0f}%" if "gbps" in r else f"error: {str(r.get('error'))[:300]}"),
                      flush=True)
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
    finally:
        rb.cleanup()
    elapsed = time.monotonic() - started

    # Table
    def med(proxy, rsname, direction, key):
        v = [r[key] for r in results if r["proxy"] == proxy and r["rules"] == rsname and r["direction"] == direction
             and key in r]
        return statistics.median(v) if v else None

    def verified(proxy, rsname, direction):
        v = [r.get("verify_ok") for r in results if r["proxy"] == proxy and r["rules"] == rsname
             and r["direction"] == direction and "verify_ok" in r]
        return "n/a" if not v else ("ok" if all(v) else f"FAILED ({v.count(False)}/{len(v)})")

    head = ["proxy", "rules", "direction", "Gbit/s", "CPU-s/GB", "CPU ratio to 0 rules", "Gbit/s ratio to 0 rules",
            "secrets redacted", "sha256 verified"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    desc = {"0": "0", "R10": "10 (4 regex + 6 literal)", "R100": "100 (4 regex + 96 literal)",
            "L10": "10 literal", "L100": "100 literal", **{r: f"1 regex: {r}" for r, _ in REGEX_RULES}}
    for proxy, rsname, direction in cells:
        g, c = med(proxy, rsname, direction, "gbps"), med(proxy, rsname, direction, "cpu_s_per_gb")
        g0, c0 = med(proxy, "0", direction, "gbps"), med(proxy, "0", direction, "cpu_s_per_gb")
        pname = "ztproxy userspace" if proxy == "ztproxy" else "nginx http sub_filter"
        rows.append("| " + " | ".join([
            pname, desc[rsname], direction, fmt(g), fmt(c),
            f"{c / c0:.2f}" if c and c0 else "n/a", f"{g / g0:.2f}" if g and g0 else "n/a",
            f"{counts[rsname][0]} ({counts[rsname][1]} B)", verified(proxy, rsname, direction)]) + " |")
    table = "\n".join(rows)

    mode = "quick" if a.quick else "default"
    fg = b.foreign
    md = [
        f"# ztproxy redaction cost ({mode} run)",
        "",
        f"{datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}, {elapsed:.0f} s, "
        f"`tests/bench/redact_bench.py {' '.join(sys.argv[1:])}`",
        "",
        f"One {a.stream_mib} MiB stream per transfer, TLS 1.3 TLS_AES_128_GCM_SHA256, one worker. Values are "
        f"medians over {a.rounds} round(s); each round: a fresh proxy, one SHA-256-verified transfer, then "
        f"{a.transfers} timed transfers (Gbit/s: median transfer; CPU-s/GB: proxy process tree utime+stime "
        "over the timed transfers per 10^9 payload bytes). Ratios are to the same proxy's 0-rule row, same "
        "direction.",
        "",
        table,
        "",
        "## What is and is not comparable",
        "",
        "- ztproxy rows R10/R100 mix 4 regexes (card number `\\b(?:\\d[ -]?){13,16}\\b`, bearer token, AWS key "
        "`AKIA[0-9A-Z]{16}`, bounded e-mail) with host-name literals; nginx `sub_filter` cannot express a regex, "
        "so nginx has no R rows. The L10/L100 rows (host-name literals only) are the like-for-like comparison: "
        "the same literals, the same same-length '*' replacement, the same expected output (verified for both).",
        "- nginx only filters responses: no nginx upload rows.",
        "- nginx parses HTTP: the backend serves the stream as one HTTP/1.1 response (Content-Length), the "
        "client sends `GET / HTTP/1.0`; with sub_filter nginx drops Content-Length and ends the body by closing. "
        "nginx's 0-rule row is therefore an HTTP proxy (HTTP parsing, `proxy_buffering off`, default "
        "`proxy_buffer_size` of one page), not the TCP terminator of run_bench.py; compare ratios more than "
        "absolute numbers. ztproxy relays the byte stream without parsing it.",
        "- Semantics differ at the edges: ztproxy matches every rule over the whole stream (across reads and "
        "TLS records), masks the union of all matches and holds back at most the longest rule's width - 1 "
        "bytes; nginx sub_filter matches literals within its buffers, leftmost, non-overlapping. For this "
        "stream (non-overlapping plants) both give the same bytes.",
        "- Upload: the client sends close_notify after the last byte (`bench_client --half-close`), so the "
        "rewriter's held tail goes out at once; a client that keeps the connection open instead waits up to "
        "the 20 ms quiet timer for the tail (not measured here).",
        "",
        "## Stream and rules",
        "",
        f"- {a.stream_mib} MiB of log-like text (fixed seed), {len(plants)} planted secrets: per 64 KiB one card "
        "number (16 digits, grouped by space, dash or none) and one of bearer token / AWS key id / e-mail / host "
        "name in turn (100 host names `svc-NN.env.internal.example.net`, each planted in turn)",
        "- rules: " + "; ".join(f"`{rid}` = `{pat}`" for rid, pat in REGEX_RULES) + "; host literals "
        "`host-000`..`host-099`; all `direction = \"both\"`, mask `*`",
        "- expected output: the plants whose rule is on the route replaced by '*' (same length); Python's `re` "
        "cross-checks that no rule matches outside a plant",
        "",
        "## Machine",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; "
        f"kernel {os.uname().release}",
        f"- ztproxy: {rb.first_line([str(b.ztproxy), '--version'])} ({b.ztproxy_built}, copied at start); "
        f"nginx: {rb.first_line(['nginx', '-v']) if have_nginx else 'not run'}; "
        f"OpenSSL: {rb.first_line(['openssl', 'version'])}",
        f"- load average at start {' '.join(b.loadavg_start)}, at end "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}; whole-host busy before each round: "
        f"{', '.join(f'{x:.0f}%' for x in busy_samples)}; other processes on the proxy CPU during timed "
        f"transfers: median {statistics.median(fg) if fg else 0:.0f}%, max {max(fg) if fg else 0:.0f}%; "
        f"rounds started without a quiet host after --quiet-wait {a.quiet_wait:g} s: {b.noisy_waits}",
        f"- pinning: proxy on CPU {a.proxy_cpu}, client + backend on CPU {a.load_cpu}" if b.pin else "- pinning: off",
        "",
        "## Anomalies",
        "",
        *([f"- {x}" for x in b.anomalies] or ["- none"]),
        "",
        "## Runs",
        "",
        *[f"- round {r['round']} {r['proxy']} {r['rules']} {r['direction']}: "
          + (f"{r['gbps']:.2f} Gbit/s, {r['cpu_s']:.2f} CPU-s over {r['transfers']} transfers = "
             f"{r['cpu_s_per_gb']:.3f} CPU-s/GB, verify {'ok' if r.get('verify_ok') else 'FAILED'}, load CPU "
             f"{r['load_pct']:.0f}%, foreign on proxy CPU {r['foreign_pct']:.0f}%" if "gbps" in r
             else f"error {str(r.get('error'))[:300]}") for r in results],
        "",
        "First access-log line per ztproxy cell (round 0):",
        "",
        *[f"- {r['rules']} {r['direction']}: `{r.get('access_first', '')}`" for r in results
          if r["proxy"] == "ztproxy" and r["round"] == 0],
        "",
    ]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(md))
    out.with_suffix(".json").write_text(json.dumps({"mode": mode, "results": results, "anomalies": b.anomalies},
                                                   indent=1))
    print()
    print(table)
    print()
    for x in b.anomalies:
        print(f"anomaly: {x}")
    print(f"wrote {out.with_suffix('.md')}")
    bad = any(r.get("verify_ok") is False for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
