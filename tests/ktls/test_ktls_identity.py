#!/usr/bin/env python3
"""Identity on the kernel record path: tests/e2e/test_identity.py (mTLS, PROXY protocol v2) run
with every listener forced onto record_path = "kernel", so the client certificate is verified
before the session moves into kTLS and the PROXY v2 header reaches the backend ahead of the splice
relay (and of the rewrite relay on kTLS). The harness asserts rx_path=kernel tx_path=kernel on
every relayed connection.

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
from test_identity import IdentityTest  # noqa: E402,F401  (the suite this file runs)


if __name__ == "__main__":
    sys.exit(main(__name__))
