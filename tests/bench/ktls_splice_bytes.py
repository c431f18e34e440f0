#!/usr/bin/env python3
"""ktls_splice_bytes: bytes through user space per GB on ztproxy's kernel (kTLS + splice) route.

Functional, not timed: run inside a kernel that has kTLS (run_bench.py starts it through
tests/ktls/run-in-ktls-kernel.sh). For TLS 1.3 and 1.2, download and upload, one bench_client
transfer through `ztproxy run --ktls require --record-path kernel`; the proxy's access-log line
says how many application bytes were spliced and how many passed through user space, and
/proc/net/tls_stat says whether the kernel did the record crypto. Expected: 0 bytes through user
space per GB, every connection counted as kernel TX and RX.

    ktls_splice_bytes.py --build-dir BUILD --out result.json [--bytes N]
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TLS_STAT = Path("/proc/net/tls_stat")
ACCESS_FIELDS = ("rx_path", "tx_path", "bytes_up", "bytes_down", "spliced_up", "spliced_down", "copied_up",
                 "copied_down", "close")


def tls_stat() -> dict:
    return {k: int(v) for k, v in (line.split() for line in TLS_STAT.read_text().splitlines() if line.strip())}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def access_entry(log: Path) -> dict:
    """The one client connection's access line (the readiness probe above made none: it never
    finished a handshake, so its line says so and is skipped)."""
    entries = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("access ") or " version=TLS" not in line:
            continue
        entries.append({k: v for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line) if k in ACCESS_FIELDS})
    if len(entries) != 1:
        raise RuntimeError(f"expected one TLS access line, got {len(entries)}: {log.read_text()[-500:]}")
    return entries[0]


def one_run(build: Path, certs: Path, tls: str, direction: str, nbytes: int, tmp: Path) -> dict:
    backend = subprocess.Popen([str(build / "tests/bench/bench_backend"), "--max-seconds", "600",
                                "source" if direction == "download" else "sink", str(nbytes)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proxy = None
    try:
        m = re.match(r"port (\d+)", backend.stdout.readline().decode())
        if not m:
            raise RuntimeError("bench_backend did not start")
        port = free_port()
        log = tmp / f"ztproxy-{tls}-{direction}.log"
        with open(log, "wb") as logf:
            proxy = subprocess.Popen([str(build / "ztproxy"), "run", "--listen", f"127.0.0.1:{port}",
                                      "--backend", f"127.0.0.1:{m.group(1)}", "--cert", str(certs / "c.pem"),
                                      "--key", str(certs / "k.pem"), "--workers", "1", "--ktls", "require",
                                      "--record-path", "kernel"], stdout=logf, stderr=subprocess.STDOUT)
        wait_port(port, proxy, "ztproxy")
        before = tls_stat()
        client = subprocess.run([str(build / "tests/bench/bench_client"), direction, str(nbytes), "--connect",
                                 f"127.0.0.1:{port}", "--tls", tls, "--max-seconds", "500"],
                                capture_output=True, text=True, timeout=560)
        after = tls_stat()
        lines = client.stdout.strip().splitlines()
        result = json.loads(lines[-1]) if lines else {}
        if client.returncode != 0 or not result.get("ok"):
            raise RuntimeError(f"bench_client {direction} TLS {tls}: rc={client.returncode} {result} "
                               f"{client.stderr[-300:]}")
        proxy.send_signal(signal.SIGTERM)  # drain: the access line is written when the connection ends
        proxy.wait(timeout=60)
        entry = access_entry(log)
    finally:
        for p in (proxy, backend):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    copied = int(entry["copied_up"]) + int(entry["copied_down"])
    spliced = int(entry["spliced_up"]) + int(entry["spliced_down"])
    return {
        "tls": tls, "direction": direction, "bytes": nbytes, "version": result.get("version"),
        "cipher": result.get("cipher"), "rx_path": entry["rx_path"], "tx_path": entry["tx_path"],
        "spliced": spliced, "copied": copied, "copied_per_gb": copied / (nbytes / 1e9),
        "tls_stat": {k: after.get(k, 0) - before.get(k, 0) for k in ("TlsTxSw", "TlsRxSw", "TlsDecryptError")},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bytes", type=int, default=256 << 20)
    a = ap.parse_args()
    if not TLS_STAT.exists():
        print("ktls_splice_bytes: no /proc/net/tls_stat: run this inside the kTLS kernel", file=sys.stderr)
        return 2
    build = Path(a.build_dir).resolve()
    runs, errors = [], []
    with tempfile.TemporaryDirectory(prefix="ztp-ktls-bench-") as t:
        tmp = Path(t)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(tmp / "k.pem"), "-out", str(tmp / "c.pem"), "-days", "2",
                        "-subj", "/CN=localhost"], check=True, capture_output=True)
        for tls in ("1.3", "1.2"):
            for direction in ("download", "upload"):
                try:
                    runs.append(one_run(build, tmp, tls, direction, a.bytes, tmp))
                except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
                    errors.append(str(e))
    Path(a.out).write_text(json.dumps({"kernel": os.uname().release, "runs": runs, "errors": errors}, indent=1))
    return 0 if runs and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
