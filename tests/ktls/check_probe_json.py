#!/usr/bin/env python3
"""`ztproxy probe --json` inside the kTLS kernel: kTLS must work for all 6 version x cipher
combinations in both directions.

usage: check_probe_json.py ZTPROXY_BIN

Exit 0 = proven, 1 = failed, 77 = skipped (no kTLS on this kernel and not in the kTLS VM; inside
the VM, KTLS_VM_GUEST is set and a missing kTLS is a failure).
"""
import json
import os
import subprocess
import sys

SKIP = 77


def main() -> int:
    binary = sys.argv[1]
    out = subprocess.run([binary, "probe", "--json"], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        print(f"FAIL: ztproxy probe --json exited {out.returncode}\n{out.stdout}{out.stderr}")
        return 1
    try:
        report = json.loads(out.stdout)
        ktls = report["ktls"]
        entries = ktls["entries"]
    except (ValueError, KeyError, TypeError) as e:
        print(f"FAIL: unexpected probe output ({e}):\n{out.stdout}")
        return 1

    in_vm = bool(os.environ.get("KTLS_VM_GUEST"))
    if not ktls.get("ulp_available"):
        if in_vm:
            print(f"FAIL: inside the kTLS VM but the probe says kTLS is unavailable: {ktls.get('why_not')}")
            return 1
        print(f"SKIP: kTLS unavailable here ({ktls.get('why_not')})")
        return SKIP

    combos = {(e["version"], e["cipher"]) for e in entries}
    want = {(v, c) for v in ("1.2", "1.3") for c in ("AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305")}
    ok = combos == want and len(entries) == 6
    if not ok:
        print(f"FAIL: expected exactly {sorted(want)}, got {sorted(combos)}")
    for e in entries:
        good = e["tx"] is True and e["rx"] is True
        ok &= good
        detail = "" if good else f" {e['error']}"
        print(f"TLS {e['version']} {e['cipher']:<18} tx={e['tx']} rx={e['rx']}{detail}")
    print("kTLS probe: all combinations work in both directions" if ok else "FAIL: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
