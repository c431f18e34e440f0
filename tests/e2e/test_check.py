"""`ztproxy check -c FILE` against the example policies (deploy/policies/*.toml and every policy
embedded in a deploy/k8s manifest) and the bad policy fixtures.

Environment: ZTPROXY_BIN (the binary) and ZTP_SOURCE_DIR (the repository root); CTest sets both.
The expected messages of each bad fixture live in its own "# expect: line:col: message" header,
which the unit tests (tests/unit/config_loader_test.cpp) read too, so the two cannot drift.
Certificates are generated here with the openssl CLI; nothing is hard-coded.
"""

import base64
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import tomllib
import unittest

SOURCE_DIR = pathlib.Path(os.environ.get("ZTP_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
BAD_DIR = SOURCE_DIR / "tests/fixtures/policies/bad"
DEPLOY_DIR = SOURCE_DIR / "deploy/policies"
K8S_DIR = SOURCE_DIR / "deploy/k8s"
EXPECT_PREFIX = "# expect: "


def read_expectations(path):
    """The "line:col: message" lines heading a bad fixture, in report order."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith(EXPECT_PREFIX):
                break
            out.append(line[len(EXPECT_PREFIX):].rstrip("\n"))
    return out


def yaml_toml_blocks(path):
    """(key, text) of every YAML block scalar whose key ends in .toml (`policy.toml: |`), dedented.

    Plain Python, no YAML library: a block scalar is the lines after `key: |` that are blank or
    indented deeper than the key, which is all a ConfigMap's data needs.
    """
    lines = pathlib.Path(path).read_text().splitlines()
    header = re.compile(r"^(\s*)([\w.-]+\.toml):\s*\|[-+]?\s*$")
    blocks = []
    i = 0
    while i < len(lines):
        m = header.match(lines[i])
        i += 1
        if not m:
            continue
        key_indent = len(m.group(1))
        body = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > key_indent):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        indent = min(len(l) - len(l.lstrip()) for l in body if l.strip())
        blocks.append((m.group(2), "\n".join(l[indent:] for l in body) + "\n"))
    return blocks


# The table of expectations: fixture file -> expected "line:col: message" lines.
EXPECTATIONS = {p.name: read_expectations(p) for p in sorted(BAD_DIR.glob("*.toml"))}


def make_cert(cert, key, names, common_name="ztproxy-test"):
    """A self-signed P-256 certificate valid for two days, SANs from `names`."""
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-subj", "/CN=" + common_name, "-keyout", str(key), "-out", str(cert), "-days", "2"]
    if names:
        cmd += ["-addext", "subjectAltName=" + ",".join("DNS:" + n for n in names)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


MINIMAL_POLICY = """\
[[listener]]
name = "public"
address = "127.0.0.1:8443"
  [listener.tls]
  [[listener.tls.certificate]]
  name = "main"
  cert = "{cert}"
  key = "{key}"
  server_names = ["check.test"]

[[backend]]
name = "app"
address = "127.0.0.1:8080"

[[route]]
default = true
backend = "app"
"""


def value_at(text, key):
    """"line:col" of the value of the first `key = ...` line in a policy text (both 1-based)."""
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"\s*" + re.escape(key) + r"\s*=\s*", line)
        if m:
            return f"{n}:{m.end() + 1}"
    raise AssertionError(f"no '{key} =' line in:\n{text}")


class CheckCommand(unittest.TestCase):
    def setUp(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="ztp-check-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def binary(self):
        binary = os.environ.get("ZTPROXY_BIN")
        # Not a skip: in CTest the variable is always set, so its absence is a broken setup.
        self.assertTrue(binary, "ZTPROXY_BIN is not set")
        self.assertTrue(os.access(binary, os.X_OK), f"ZTPROXY_BIN={binary} is not an executable file")
        return binary

    def check(self, policy):
        # Run from an unrelated directory: relative certificate paths must resolve against the
        # policy file's directory, not the working directory.
        cwd = self.tmp / "elsewhere"
        cwd.mkdir(exist_ok=True)
        proc = subprocess.run([self.binary(), "check", "-c", str(policy)], cwd=cwd, capture_output=True,
                              text=True, timeout=60)
        return proc.returncode, proc.stdout, proc.stderr

    def check_example(self, name, text):
        """Checks an example policy as shipped, with generated certificates where it expects
        them (relative paths only: an example must not point into the host's /etc)."""
        policy = self.tmp / name / "policy" / "policy.toml"
        policy.parent.mkdir(parents=True)
        policy.write_text(text)
        for listener in tomllib.loads(text).get("listener", []):
            for c in listener["tls"]["certificate"]:
                cert, key = (policy.parent / c["cert"]).resolve(), (policy.parent / c["key"]).resolve()
                for p in (cert, key):
                    self.assertTrue(p.is_relative_to(self.tmp), f"{name}: {p} is outside the policy's tree")
                make_cert(cert, key, c.get("server_names", []), c["name"])
            if "client_ca" in listener["tls"]:  # a self-signed certificate is a CA bundle
                ca = (policy.parent / listener["tls"]["client_ca"]).resolve()
                self.assertTrue(ca.is_relative_to(self.tmp), f"{name}: {ca} is outside the policy's tree")
                make_cert(ca, ca.with_suffix(".key"), [], "clients CA")
            if "session_ticket_keys" in listener["tls"]:  # one fresh key, as the operator would make it
                keys = (policy.parent / listener["tls"]["session_ticket_keys"]).resolve()
                self.assertTrue(keys.is_relative_to(self.tmp), f"{name}: {keys} is outside the policy's tree")
                keys.parent.mkdir(parents=True, exist_ok=True)
                keys.write_text(base64.b64encode(os.urandom(80)).decode() + "\n")
                keys.chmod(0o600)
        if "token_file" in tomllib.loads(text).get("admin", {}):  # the admin bearer token's Secret
            token = (policy.parent / tomllib.loads(text)["admin"]["token_file"]).resolve()
            self.assertTrue(token.is_relative_to(self.tmp), f"{name}: {token} is outside the policy's tree")
            token.parent.mkdir(parents=True, exist_ok=True)
            token.write_text(os.urandom(16).hex() + "\n")
        rc, out, err = self.check(policy)
        self.assertEqual(rc, 0, f"stdout:\n{out}\nstderr:\n{err}")

    def test_deploy_policies_pass(self):
        policies = sorted(DEPLOY_DIR.glob("*.toml"))
        self.assertGreaterEqual(len(policies), 2, f"no example policies in {DEPLOY_DIR}")
        for src in policies:
            with self.subTest(policy=src.name):
                self.check_example(src.stem, src.read_text())

    def test_policies_in_kubernetes_manifests_pass(self):
        embedded = [(f"{m.stem}-{key}", text) for m in sorted(K8S_DIR.glob("*.yaml"))
                    for key, text in yaml_toml_blocks(m)]
        # The sidecar and the edge example at least: an extraction that finds nothing proves nothing.
        self.assertGreaterEqual(len(embedded), 2, f"no policy.toml blocks in {K8S_DIR}")
        for name, text in embedded:
            with self.subTest(policy=name):
                self.assertIn("[[listener]]", text)
                self.check_example(name, text)

    def test_bad_fixtures_report_exact_problems(self):
        self.assertGreaterEqual(len(EXPECTATIONS), 15)
        for name, expected in EXPECTATIONS.items():
            with self.subTest(fixture=name):
                self.assertTrue(expected, f"{name} has no '{EXPECT_PREFIX}line:col: message' header")
                path = BAD_DIR / name
                rc, out, err = self.check(path)
                self.assertEqual(rc, 1, f"stdout:\n{out}\nstderr:\n{err}")
                # Only "path:line:col: message" lines, not the summary ("path: N problem(s)").
                located = re.compile(re.escape(f"{path}:") + r"(\d+:\d+: .*)$")
                reported = [m.group(1) for m in map(located.match, out.splitlines()) if m]
                self.assertEqual(reported, expected, f"stdout:\n{out}")

    def test_key_that_does_not_match_the_certificate(self):
        make_cert(self.tmp / "certs/a.pem", self.tmp / "certs/a.key", ["check.test"])
        make_cert(self.tmp / "certs/b.pem", self.tmp / "certs/b.key", ["check.test"])
        policy = self.tmp / "policy.toml"
        text = MINIMAL_POLICY.format(cert="certs/a.pem", key="certs/b.key")
        policy.write_text(text)
        rc, out, err = self.check(policy)
        self.assertEqual(rc, 1, f"stdout:\n{out}\nstderr:\n{err}")
        # At the key's value: the key is what does not belong to the certificate.
        self.assertEqual(out.splitlines(), [
            f"{policy}:{value_at(text, 'key')}: key '{self.tmp / 'certs/b.key'}' does not match certificate "
            f"'{self.tmp / 'certs/a.pem'}'",
            f"{policy}: 1 problem(s)"])

    def test_missing_certificate_file(self):
        make_cert(self.tmp / "certs/a.pem", self.tmp / "certs/a.key", ["check.test"])
        policy = self.tmp / "policy.toml"
        text = MINIMAL_POLICY.format(cert="certs/missing.pem", key="certs/a.key")
        policy.write_text(text)
        rc, out, err = self.check(policy)
        self.assertEqual(rc, 1, f"stdout:\n{out}\nstderr:\n{err}")
        self.assertEqual(out.splitlines(), [
            f"{policy}:{value_at(text, 'cert')}: cannot read certificate '{self.tmp / 'certs/missing.pem'}': "
            "No such file or directory",
            f"{policy}: 1 problem(s)"])


if __name__ == "__main__":
    unittest.main()
