#!/usr/bin/env python3
"""Server instructions per full TLS handshake, per setting (callgrind over handshake_profile).

    tests/bench/handshake_profile.py [--build-dir build] [-n 100] [--only NAME,...] [--certs ecdsa,rsa]

Each row runs build/tests/bench/handshake_profile (in-memory handshakes, the server built by
ztproxy's own ServerTlsContext) under `valgrind --tool=callgrind --toggle-collect='ztp_server_*'`,
so only the server's work is counted, twice: with 10 handshakes and with 10 + N. The difference
divided by N is the server's instructions per handshake, without one-time costs (certificate
generation, OpenSSL's first fetches). Instruction counts do not move when the machine is busy;
they are what the README's performance notes quote. Not a test: numbers are printed, never
asserted.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench  # noqa: E402  (the bench's package set-up)

ROOT = run_bench.ROOT

# name -> handshake_profile arguments (the certificate is added per column)
MODES = {
    "userspace path (defaults)": ["--record-path", "userspace"],
    "openssl path (defaults)": ["--record-path", "openssl"],
    "userspace, tls13_tickets = 2": ["--record-path", "userspace", "--tickets", "2"],
    "userspace, tls13_tickets = 1": ["--record-path", "userspace", "--tickets", "1"],
    "userspace, tls13_tickets = 0": ["--record-path", "userspace", "--tickets", "0"],
    "userspace, client offers P-256 only": ["--record-path", "userspace", "--group", "P-256"],
    "userspace, TLS 1.2, session cache on": ["--record-path", "userspace", "--tls", "1.2", "--session-cache", "on"],
    "userspace, TLS 1.2, session cache off": ["--record-path", "userspace", "--tls", "1.2", "--session-cache", "off"],
    "userspace, chain file (leaf + intermediate)": ["--record-path", "userspace", "--cert", "chain"],
}


def instructions(binary: Path, args: list[str], n: int, tmp: Path) -> int:
    out = tmp / "callgrind.out"
    cmd = ["valgrind", "--tool=callgrind", "--toggle-collect=ztp_server_*", f"--callgrind-out-file={out}",
           str(binary), "-n", str(n), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout[-1000:]}\n{r.stderr[-2000:]}")
    m = re.search(r"^(?:totals|summary): (\d+)", out.read_text(), re.M)
    if not m:
        sys.exit(f"no instruction total in {out}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    ap.add_argument("-n", type=int, default=100, help="handshakes measured per row (after 10 not counted)")
    ap.add_argument("--only", default="", help="comma-separated row names (substrings) to run")
    ap.add_argument("--certs", default="ecdsa,rsa")
    a = ap.parse_args()
    run_bench.apt_install(run_bench.missing_tools({"valgrind": "valgrind"}))
    binary = Path(a.build_dir) / "tests" / "bench" / "handshake_profile"
    if not binary.exists():
        sys.exit(f"{binary} is missing: cmake --build {a.build_dir} --target handshake_profile")
    wanted = [w for w in a.only.split(",") if w]
    certs = [c for c in a.certs.split(",") if c]
    print(f"server instructions per full handshake (callgrind, {a.n} handshakes; the bench's client: "
          f"TLS_AES_128_GCM_SHA256, X25519, 16-byte echo)\n")
    print("| setting | " + " | ".join(certs) + " |")
    print("|---|" + "---:|" * len(certs))
    with tempfile.TemporaryDirectory(prefix="ztp-hs-profile-") as t:
        tmp = Path(t)
        for name, args in MODES.items():
            if wanted and not any(w in name for w in wanted):
                continue
            cells = []
            for cert in certs:
                if "--cert" in args and cert != certs[0]:
                    cells.append("")  # the chain row has its own (ECDSA) certificate
                    continue
                full = args if "--cert" in args else [*args, "--cert", cert]
                warm = instructions(binary, full, 10, tmp)
                total = instructions(binary, full, 10 + a.n, tmp)
                cells.append(f"{(total - warm) / a.n / 1e6:.3f} M")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
