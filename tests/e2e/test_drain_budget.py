"""The drain's time budget. SIGTERM lets live connections finish for `drain_timeout`, 30 s unless
set (README, Signals, reload and drain), and whatever stops ztproxy from outside must wait longer
than that, or it kills the connections the drain was letting finish: systemd's TimeoutStopSec
("45s leaves room for the 30 s drain", README, systemd) and each Kubernetes manifest's
terminationGracePeriodSeconds, above the drain_timeout of the policy it embeds.

The default is read from the drain announcement, which names the deadline in force, so nothing
here waits 30 s.
"""

import pathlib
import re
import signal
import unittest

from harness import LocalhostTestCase, SOURCE_DIR, policy_toml

DEPLOY = pathlib.Path(SOURCE_DIR) / "deploy"
DEFAULT_DRAIN_S = 30
# Past the drain deadline ztproxy still ends the rest with close_notify and exits: room for that.
MARGIN_S = 5


def drain_timeout_s(policy_text):
    """The drain_timeout a policy sets, in seconds (the default when it sets none)."""
    m = re.search(r'^\s*drain_timeout\s*=\s*"(\d+)s"', policy_text, re.M)
    return int(m.group(1)) if m else DEFAULT_DRAIN_S


class DrainBudgetTest(LocalhostTestCase):
    def announced_drain_ms(self, proxy):
        rc, killed = proxy.stop(signal.SIGTERM, timeout=10)  # no connection: the drain ends at once
        self.assertEqual((rc, killed), (0, False), proxy.diag())
        found = [re.search(r"draining: new connections are refused, live ones may finish within (\d+) ms", l)
                 for l in proxy.err.snapshot()]
        [m] = [m for m in found if m] or [None]
        self.assertIsNotNone(m, proxy.diag())
        return int(m.group(1))

    def test_the_default_drain_timeout_is_30_seconds(self):
        backend = self.start_backend("http")
        quick = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", backend.address,
                                  "--cert", self.leaf.cert, "--key", self.leaf.key])
        self.assertEqual(self.announced_drain_ms(quick), DEFAULT_DRAIN_S * 1000, "quick mode")
        text = policy_toml([{"name": "main", "certs": [("main", self.leaf, None)]}],
                           [{"name": "app", "addresses": [backend.address]}],
                           [{"backend": "app", "default": True}])
        self.assertNotIn("drain_timeout", text)
        from_file = self.start_policy_proxy(text)
        self.assertEqual(self.announced_drain_ms(from_file), DEFAULT_DRAIN_S * 1000, "policy file")
        # The announcement names the deadline in force, not a constant.
        custom = "[limits]\ndrain_timeout = \"7s\"\n\n" + text
        self.assertEqual(drain_timeout_s(custom), 7)
        self.assertEqual(self.announced_drain_ms(self.start_policy_proxy(custom)), 7000)

    def test_systemd_waits_longer_than_the_drain(self):
        unit = (DEPLOY / "systemd/ztproxy.service").read_text()
        m = re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.M)
        self.assertIsNotNone(m, "ztproxy.service sets no TimeoutStopSec (systemd's default is 90 s)")
        # The unit runs the policy at /etc/ztproxy/policy.toml: an operator's, so the default applies.
        self.assertGreaterEqual(int(m.group(1)), DEFAULT_DRAIN_S + MARGIN_S)

    def test_kubernetes_waits_longer_than_each_manifests_drain(self):
        manifests = sorted((DEPLOY / "k8s").glob("*.yaml"))
        self.assertTrue(manifests)
        for path in manifests:
            with self.subTest(manifest=path.name):
                text = path.read_text()
                m = re.search(r"^\s*terminationGracePeriodSeconds:\s*(\d+)", text, re.M)
                self.assertIsNotNone(m, "%s: no terminationGracePeriodSeconds (Kubernetes' default is 30 s)"
                                     % path.name)
                self.assertGreaterEqual(int(m.group(1)), drain_timeout_s(text) + MARGIN_S, path.name)


if __name__ == "__main__":
    unittest.main()
