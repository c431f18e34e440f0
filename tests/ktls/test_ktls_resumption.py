#!/usr/bin/env python3
"""Session resumption on the kernel record path: tests/e2e/test_resumption.py (tickets across
SIGHUP, instances sharing a key file, rotation, the TLS 1.2 session cache after a clean close) run
with every listener forced onto record_path = "kernel". A resumed handshake hands its keys to kTLS
like a full one, and the session's cache entry outlives the SSL freed right after the handshake.
The harness asserts rx_path=kernel tx_path=kernel on every relayed connection it waits for.

Same contract as test_ktls_e2e.py: exit 77 (CTest skip) on a kernel without kTLS outside the VM;
inside it (KTLS_VM_GUEST set) a missing kTLS fails.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
# Read by the harness when it is imported: every policy the suite writes takes the kernel path.
os.environ["ZTP_E2E_RECORD_PATH"] = "kernel"

from test_ktls_e2e import main  # noqa: E402  (exit 77 without kTLS outside the VM)
from test_resumption import KeyFileCheck, ResumptionTest  # noqa: E402,F401  (the suites this file runs)


if __name__ == "__main__":
    sys.exit(main(__name__))
