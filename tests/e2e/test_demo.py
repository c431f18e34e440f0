"""`ztproxy demo`: generates a CA and certificate, starts its embedded backend, prints a curl
command line that works, and serves. The test runs exactly the printed command.
"""

import os
import re
import shlex
import stat
import subprocess
import unittest

from harness import E2ETestCase, Proxy, curl, require_tool

CURL_LINE = r"^curl --cacert .*"


class DemoTest(E2ETestCase):
    def start_demo(self, *args, cwd=None):
        proxy = Proxy(["demo", "--listen", "127.0.0.1:0"] + list(args), cwd=cwd,
                      label="ztproxy-demo")
        self.addCleanup(self._stop_proxy, proxy)
        line = proxy.wait_line("stdout", CURL_LINE, what="the printed curl command").group(0)
        return proxy, line

    def run_printed(self, proxy, line, *extra):
        argv = shlex.split(line)
        self.assertEqual(argv[0], "curl", line)
        url = [a for a in argv if a.startswith("https://")]
        self.assertEqual(len(url), 1, "one https:// URL expected in %r" % line)
        m = re.match(r"^https://localhost:(\d+)/$", url[0])
        self.assertTrue(m, "URL should be https://localhost:PORT/: %r" % line)
        self.assertEqual(int(m.group(1)), proxy.port, "URL port is not the listening port")
        p = subprocess.run(argv + list(extra), capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, "printed command failed: %s\n%s\n%s"
                         % (line, p.stderr.decode(errors="replace"), proxy.diag()))
        return argv, p.stdout.decode("utf-8", "replace")

    def test_printed_curl_command_shows_demo_page(self):
        require_tool("curl")
        workdir = os.path.join(self.tmp, "demo")
        proxy, line = self.start_demo("--workdir", workdir)
        argv, page = self.run_printed(proxy, line, "-H", "X-Demo: <script>&")
        self.assertIn("ztproxy demo backend", page)
        self.assertIn("GET / HTTP/1.1", page)
        self.assertIn("&lt;script&gt;&amp;", page)  # request headers shown, HTML-escaped
        self.assertNotIn("<script>", page)

        # The CA it printed lives in the work directory; the key there is private.
        ca = argv[argv.index("--cacert") + 1]
        self.assertTrue(os.path.isfile(ca), ca)
        self.assertTrue(os.path.realpath(ca).startswith(os.path.realpath(workdir)), ca)
        keys = [f for f in os.listdir(workdir) if f.endswith(".key")]
        self.assertTrue(keys, os.listdir(workdir))
        for k in keys:
            mode = stat.S_IMODE(os.stat(os.path.join(workdir, k)).st_mode)
            self.assertEqual(mode & 0o077, 0, "%s is mode %o" % (k, mode))

        # Other paths of the embedded backend, through the proxy.
        base = ["--cacert", ca, "--resolve", "localhost:%d:127.0.0.1" % proxy.port]
        r = curl(base + ["https://localhost:%d/health" % proxy.port])
        self.assertEqual((r.returncode, r.stdout), (0, b"ok\n"), r.stderr)
        r = curl(base + ["-o", os.devnull, "-w", "%{http_code}",
                         "https://localhost:%d/nope" % proxy.port])
        self.assertEqual((r.returncode, r.stdout), (0, b"404"), r.stderr)
        entries = proxy.wait_access(count=3)
        self.assertTrue(all(e["sni"] == "localhost" for e in entries), entries)

    def test_default_workdir_is_dot_demo(self):
        require_tool("curl")
        proxy, line = self.start_demo(cwd=self.tmp)
        _, page = self.run_printed(proxy, line)
        self.assertIn("ztproxy demo backend", page)
        self.assertTrue(os.path.isdir(os.path.join(self.tmp, ".demo")), os.listdir(self.tmp))

    def test_keep_alive_through_demo(self):
        require_tool("curl")
        proxy, line = self.start_demo("--workdir", os.path.join(self.tmp, "demo"))
        argv = shlex.split(line)
        url = [a for a in argv if a.startswith("https://")][0]
        # Two URLs in one curl invocation reuse the connection: one access-log entry.
        p = subprocess.run(argv + [url + "health"], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn("ztproxy demo backend", out)
        self.assertTrue(out.endswith("ok\n"), out[-100:])
        [e] = proxy.wait_access()
        self.assertEqual(e["close"], "client_close", e)


if __name__ == "__main__":
    unittest.main()
