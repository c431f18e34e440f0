"""[listener.admission] and worker steering with the real binary.

- In network namespaces made here (a veth pair; the client in its own namespace with a denied and
  an allowed address): the denied client never completes a TCP handshake (the kernel drops its
  SYNs before ztproxy sees them), the allowed one gets through curl, the counters on /metrics
  agree, and a SIGHUP reload swaps the lists without detaching the program.
- Without BPF privileges (ztproxy started as nobody): the same policy is enforced in user space
  right after accept, and the reason is logged once.
- Steering: with two workers, connections from many source addresses are spread over both, and
  every connection from one address lands on the same worker (the documented source-address hash).
Needs root (netns, setpriv); skips with the reason elsewhere."""

import os
import shutil
import signal
import subprocess
import unittest

from harness import CertAuthority, E2ETestCase, metric, scrape

NAME = "adm.test"


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, **kw)


def require_root(what):
    if os.geteuid() != 0:
        raise unittest.SkipTest("%s needs root (network namespaces, setpriv)" % what)


class Netns:
    """A namespace `ns` with veth `cl` (two client addresses) paired with `host` (the server side)."""

    def __init__(self, tag):
        self.ns = "ztpadm%d" % tag
        self.host_if, self.ns_if = "zta%dh" % tag, "zta%dc" % tag
        net = "10.%d.%d" % (200 + tag // 250 % 50, tag % 250)
        self.server, self.denied, self.allowed = net + ".1", net + ".2", net + ".3"
        self.cleanup()
        steps = [
            ["ip", "netns", "add", self.ns],
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if],
            ["ip", "link", "set", self.ns_if, "netns", self.ns],
            ["ip", "addr", "add", self.server + "/24", "dev", self.host_if],
            ["ip", "link", "set", self.host_if, "up"],
            ["ip", "-n", self.ns, "addr", "add", self.denied + "/24", "dev", self.ns_if],
            ["ip", "-n", self.ns, "addr", "add", self.allowed + "/24", "dev", self.ns_if],
            ["ip", "-n", self.ns, "link", "set", self.ns_if, "up"],
            ["ip", "-n", self.ns, "link", "set", "lo", "up"],
        ]
        for argv in steps:
            r = run(argv)
            if r.returncode != 0:
                self.cleanup()
                raise unittest.SkipTest("cannot build the test network (%s): %s"
                                        % (" ".join(argv), r.stderr.strip()))

    def cleanup(self):
        run(["ip", "link", "del", self.host_if])
        run(["ip", "netns", "del", self.ns])

    def curl(self, source, port, cafile, connect_timeout=3):
        """curl from `source` inside the namespace: (exit code, stderr)."""
        r = run(["ip", "netns", "exec", self.ns, "curl", "-sS", "-o", os.devnull, "-w", "%{http_code}",
                 "--interface", source, "--connect-timeout", str(connect_timeout), "--max-time", "10",
                 "--cacert", cafile, "--resolve", "%s:%d:%s" % (NAME, port, self.server),
                 "https://%s:%d/" % (NAME, port)])
        return r.returncode, r.stdout, r.stderr


def admission_policy(leaf, backend, address, deny, allow=()):
    lines = ['[[listener]]', 'name = "edge"', 'address = "%s"' % address,
             '  [listener.tls]', '  alpn = ["http/1.1"]',
             '  [[listener.tls.certificate]]', '  name = "main"',
             '  cert = "%s"' % leaf.cert, '  key = "%s"' % leaf.key,
             '  [listener.admission]',
             '  deny = [%s]' % ", ".join('"%s"' % d for d in deny)]
    if allow:
        lines.append('  allow = [%s]' % ", ".join('"%s"' % a for a in allow))
    lines += ['', '[[backend]]', 'name = "app"', 'addresses = ["%s"]' % backend, '',
              '[[route]]', 'default = true', 'backend = "app"', '',
              '[runtime]', 'workers = 2', '']
    return "\n".join(lines)


class AdmissionTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ca = CertAuthority(os.path.join(cls.class_tmp, "pki"))
        cls.leaf = cls.ca.issue(NAME, "ec", dns=[NAME, "localhost"])

    def admin_of(self, proxy):
        return proxy.admin_address()

    def decisions(self, admin, listener="edge"):
        status, text = scrape(admin)
        self.assertEqual(status, 200)
        return text, {r: metric(text, "ztproxy_admission_decisions_total", listener=listener, result=r)
                      for r in ("admitted", "denied", "not_allowed", "rate_limited", "unparsed")}

    def test_netns_denied_client_never_handshakes_allowed_one_gets_through(self):
        require_root("the network-namespace test")
        net = Netns(os.getpid() % 10000)
        self.addCleanup(net.cleanup)
        http = self.start_backend("http")
        path = self.write_policy(admission_policy(self.leaf, http.address, net.server + ":0",
                                                  deny=[net.denied + "/32"]))
        proxy = self.start_proxy(["run", "-c", path, "--admin", "127.0.0.1:0"])
        admin = self.admin_of(proxy)
        text, _ = self.decisions(admin)
        self.assertEqual(metric(text, "ztproxy_admission_enforcement", listener="edge", enforcement="kernel"), 1,
                         proxy.diag())

        # Denied: the SYNs are dropped in the kernel, so curl's connect times out (exit 28), not a
        # refusal (7) and not a TLS failure (35): no TCP handshake ever completed.
        rc, _, err = net.curl(net.denied, proxy.port, self.ca.cert)
        self.assertEqual(rc, 28, "denied client: curl exit %d: %s\n%s" % (rc, err, proxy.diag()))
        # Allowed: through to the backend.
        rc, code, err = net.curl(net.allowed, proxy.port, self.ca.cert)
        self.assertEqual((rc, code), (0, "200"), "allowed client: %s\n%s" % (err, proxy.diag()))
        [e] = proxy.wait_access()
        self.assertEqual(e["client"].rsplit(":", 1)[0], net.allowed, e)

        text, d = self.decisions(admin)
        # Every SYN of the denied client was judged (curl's first and the kernel's retransmissions).
        self.assertGreaterEqual(d["denied"], 2, text)
        self.assertEqual(metric(text, "ztproxy_admission_deny_rule_drops_total", listener="edge",
                                rule=net.denied + "/32"), d["denied"])
        self.assertGreaterEqual(d["admitted"], 1)
        # Fail closed drops nothing well-formed: the SYNs, handshakes and data all parsed.
        self.assertEqual((d["not_allowed"], d["rate_limited"], d["unparsed"]), (0, 0, 0), text)
        self.assertEqual(metric(text, "ztproxy_connections_total"), 1, "the denied client reached accept")

        # Reload: the lists swap in place (the program stays attached): .2 now passes, .3 is dropped.
        with open(path, "w") as f:
            f.write(admission_policy(self.leaf, http.address, net.server + ":0", deny=[net.allowed + "/32"]))
        mark = len(proxy.err.snapshot())
        proxy.send_signal(signal.SIGHUP)
        proxy.wait_line("stderr", r"reload applied", start=mark)
        rc, code, err = net.curl(net.denied, proxy.port, self.ca.cert)
        self.assertEqual((rc, code), (0, "200"), "after reload, the formerly denied: %s\n%s" % (err, proxy.diag()))
        rc, _, err = net.curl(net.allowed, proxy.port, self.ca.cert)
        self.assertEqual(rc, 28, "after reload, the newly denied: curl exit %d: %s" % (rc, err))
        text, d = self.decisions(admin)
        self.assertGreaterEqual(metric(text, "ztproxy_admission_deny_rule_drops_total", listener="edge",
                                       rule=net.allowed + "/32"), 2, text)
        self.assertEqual(metric(text, "ztproxy_connections_total"), 2)
        self.assertNotIn("eBPF admission unavailable", "".join(proxy.err.snapshot()))

    def test_without_bpf_privileges_admission_runs_after_accept(self):
        require_root("starting ztproxy without privileges")
        if not shutil.which("setpriv"):
            self.skipTest("setpriv (util-linux) is not installed")
        # nobody must read the certificate, the key and the policy.
        for d in (self.class_tmp, os.path.dirname(self.leaf.cert), self.tmp):
            os.chmod(d, 0o755)
        for f in (self.leaf.cert, self.leaf.key):
            os.chmod(f, 0o644)
        http = self.start_backend("http")
        path = self.write_policy(admission_policy(self.leaf, http.address, "127.0.0.1:0",
                                                  deny=["127.0.0.2/32"]))
        os.chmod(path, 0o644)
        proxy = self.start_proxy(["run", "-c", path, "--admin", "127.0.0.1:0"],
                                 exec_prefix=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                              "--inh-caps=-all", "--bounding-set=-all", "--"])
        admin = self.admin_of(proxy)
        proxy.wait_line("stderr", r"eBPF admission unavailable \(.+\)", what="the one fallback warning")
        text, _ = self.decisions(admin)
        self.assertEqual(metric(text, "ztproxy_admission_enforcement", listener="edge",
                                enforcement="userspace"), 1)

        def curl_from(source):
            r = run(["curl", "-sS", "-o", os.devnull, "-w", "%{http_code}", "--interface", source,
                     "--max-time", "10", "--cacert", self.ca.cert,
                     "--resolve", "localhost:%d:127.0.0.1" % proxy.port, "https://localhost:%d/" % proxy.port])
            return r.returncode, r.stdout, r.stderr

        # Denied: the TCP handshake completes (user space judges after accept), then the
        # connection is closed before a byte of TLS: curl fails in the TLS handshake.
        rc, _, err = curl_from("127.0.0.2")
        self.assertIn(rc, (35, 56), "denied client: curl exit %d: %s\n%s" % (rc, err, proxy.diag()))
        rc, code, err = curl_from("127.0.0.3")
        self.assertEqual((rc, code), (0, "200"), "%s\n%s" % (err, proxy.diag()))
        text, d = self.decisions(admin)
        self.assertEqual((d["denied"], d["admitted"]), (1, 1), text)
        self.assertEqual(metric(text, "ztproxy_admission_deny_rule_drops_total", listener="edge",
                                rule="127.0.0.2/32"), 1)
        # No access line for the refused one: it never became a connection.
        [e] = proxy.wait_access()
        self.assertTrue(e["client"].startswith("127.0.0.3:"), e)
        warnings = [l for l in proxy.err.snapshot() if "eBPF admission unavailable" in l]
        self.assertEqual(len(warnings), 1, warnings)

    def test_steering_keeps_each_source_address_on_one_worker(self):
        require_root("binding many loopback source addresses")
        http = self.start_backend("http")
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", http.address,
                                  "--cert", self.leaf.cert, "--key", self.leaf.key, "--workers", "2"])
        self.assertNotIn("worker steering unavailable", "".join(proxy.err.snapshot()))
        sources = ["127.0.0.%d" % i for i in range(10, 42)]
        for round_ in range(2):
            for s in sources:
                r = run(["curl", "-sS", "-o", os.devnull, "--interface", s, "--max-time", "10",
                         "--cacert", self.ca.cert, "--resolve", "localhost:%d:127.0.0.1" % proxy.port,
                         "https://localhost:%d/" % proxy.port])
                self.assertEqual(r.returncode, 0, r.stderr)
        entries = proxy.wait_access(count=2 * len(sources))
        by_source = {}
        for e in entries:
            by_source.setdefault(e["client"].rsplit(":", 1)[0], set()).add(e["worker"])
        self.assertEqual(set(by_source), set(sources))
        split = {s: w for s, w in by_source.items() if len(w) != 1}
        self.assertEqual(split, {}, "one source address served by both workers (different ports)")
        per_worker = {w: sum(1 for ws in by_source.values() if w in ws) for w in (0, 1)}
        # 32 addresses hashed onto 2 workers: both get some (all on one: p = 2^-31).
        self.assertTrue(all(n > 0 for n in per_worker.values()), per_worker)


if __name__ == "__main__":
    unittest.main()
