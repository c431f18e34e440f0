"""max_fragment_length on the kernel path: tests/e2e/test_max_fragment_length.py in the kTLS kernel.
Linux 6.1 cannot bound kTLS TX records (TLS_TX_MAX_PAYLOAD_LEN is newer), so a client that
negotiated max_fragment_length 512 gets its session on the userspace path instead, with every record
at most 512 bytes, counted as ztproxy_ktls_fallbacks_total{reason="max_fragment_length"}. In the
rekey suite's newer kernel (which has the option) the session stays on the kernel path, with every
record at most 512 bytes all the same (kernel_bounds_tx_records() in test_ktls_e2e.py decides).

Same contract as test_ktls_e2e.py: exit 77 (CTest skip) on a kernel without kTLS outside the VM;
inside it (KTLS_VM_GUEST set) a missing kTLS fails.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
os.environ["ZTP_E2E_KTLS"] = "1"

from test_ktls_e2e import main  # noqa: E402  (exit 77 without kTLS outside the VM)
from test_max_fragment_length import MaxFragmentLengthTest  # noqa: E402,F401  (the suite this file runs)


if __name__ == "__main__":
    sys.exit(main(__name__))
