"""The deployment files under deploy/ checked against the code they deploy: the container seccomp
profile allows io_uring and everything ztproxy's own filter allows (names that are real system
calls), the systemd units pass `systemd-analyze verify` and its offline security review, the
Dockerfile's runtime stage installs every shared library the binary links, and the tls module is
loaded at boot. (The policies embedded in deploy/k8s are checked with `ztproxy check` in
test_check.py.) There is no Docker engine or Kubernetes here: the images and manifests are not run.
"""

import ctypes
import ctypes.util
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import tempfile
import unittest

SOURCE_DIR = pathlib.Path(os.environ.get("ZTP_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
DEPLOY = SOURCE_DIR / "deploy"
PROFILE = DEPLOY / "container/seccomp-ztproxy.json"
FILTER_SOURCE = SOURCE_DIR / "proxy/app/seccomp_filter.cpp"


def ztproxy_allow_list():
    """The system calls ztproxy's own filter allows, read from its source (comments removed)."""
    text = re.sub(r"//[^\n]*", "", FILTER_SOURCE.read_text())
    block = text[text.index("kAllowed[] = {"):]
    names = set(re.findall(r'"([a-z0-9_]+)"', block[:block.index("};")]))
    names |= set(re.findall(r'allow\(ctx, "(\w+)"', text))
    for group in re.findall(r"for \(const char\* name : \{([^}]*)\}", text):
        names |= set(re.findall(r'"(\w+)"', group))
    return names


def libseccomp():
    path = ctypes.util.find_library("seccomp")
    if not path:
        raise unittest.SkipTest("libseccomp is not installed")
    lib = ctypes.CDLL(path)
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    return lib


class ContainerSeccompProfile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(PROFILE) as f:
            cls.profile = json.load(f)

    def rules(self, action):
        return [r for r in self.profile["syscalls"] if r["action"] == action]

    def allowed(self):
        return {n for r in self.rules("SCMP_ACT_ALLOW") for n in r["names"]}

    def test_shape_is_docker_default_like_and_denies_by_default(self):
        self.assertEqual(self.profile["defaultAction"], "SCMP_ACT_ERRNO")
        self.assertEqual(self.profile["defaultErrnoRet"], 1)
        arches = [a["architecture"] for a in self.profile["archMap"]]
        self.assertIn("SCMP_ARCH_X86_64", arches)
        for rule in self.profile["syscalls"]:
            self.assertTrue(rule["names"], rule)
            self.assertIn(rule["action"], ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"), rule)

    def test_io_uring_is_allowed(self):
        self.assertLessEqual({"io_uring_setup", "io_uring_enter", "io_uring_register"}, self.allowed())

    def test_everything_ztproxy_allows_itself_is_allowed(self):
        own = ztproxy_allow_list()
        self.assertGreater(len(own), 50, "could not read the allow-list from %s" % FILTER_SOURCE)
        self.assertEqual(sorted(own - self.allowed() - {"clone3"}), [],
                         "ztproxy's own filter allows these, the container profile does not")

    def test_clone3_gets_enosys_and_clone_no_namespaces(self):
        [clone3] = [r for r in self.profile["syscalls"] if r["names"] == ["clone3"]]
        self.assertEqual((clone3["action"], clone3["errnoRet"]), ("SCMP_ACT_ERRNO", 38))
        [clone] = [r for r in self.rules("SCMP_ACT_ALLOW") if "clone" in r["names"]]
        self.assertEqual(clone["names"], ["clone"])
        self.assertEqual(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ")
        self.assertEqual(clone["args"][0]["value"] & 0x10000000, 0x10000000, "CLONE_NEWUSER masked")

    @unittest.skipUnless(platform.machine() == "x86_64", "names are checked against the x86-64 table")
    def test_every_name_is_a_system_call(self):
        lib = libseccomp()
        names = {n for r in self.profile["syscalls"] for n in r["names"]}
        unknown = sorted(n for n in names if lib.seccomp_syscall_resolve_name(n.encode()) < 0)
        self.assertEqual(unknown, [])


class SystemdUnits(unittest.TestCase):
    def setUp(self):
        self.service = (DEPLOY / "systemd/ztproxy.service").read_text()
        self.socket = (DEPLOY / "systemd/ztproxy.socket").read_text()

    def directive(self, text, key):
        return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]

    def test_service_directives(self):
        self.assertEqual(self.directive(self.service, "Type"), ["notify"])
        self.assertEqual(self.directive(self.service, "ExecReload"), ["/bin/kill -HUP $MAINPID"])
        self.assertEqual(self.directive(self.service, "LimitCORE"), ["0"])
        self.assertEqual(self.directive(self.service, "NoNewPrivileges"), ["yes"])
        allowed = self.directive(self.service, "SystemCallFilter")[0].split()
        for call in ("@system-service", "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "seccomp"):
            self.assertIn(call, allowed)
        self.assertEqual(self.directive(self.service, "CapabilityBoundingSet"), ["CAP_NET_BIND_SERVICE CAP_BPF"])

    def test_socket_names_a_listener_of_the_policy(self):
        self.assertEqual(self.directive(self.socket, "FileDescriptorName"), ["public"])

    def test_systemd_analyze_verify_and_security(self):
        analyze = shutil.which("systemd-analyze")
        if not analyze:
            self.skipTest("systemd-analyze is not installed")
        binary = os.environ.get("ZTPROXY_BIN")
        self.assertTrue(binary, "ZTPROXY_BIN is not set")
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="ztp-units-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        # verify wants ExecStart's binary to exist: the unit is checked with the one just built.
        (tmp / "ztproxy.service").write_text(self.service.replace("/usr/local/bin/ztproxy", binary))
        (tmp / "ztproxy.socket").write_text(self.socket)
        r = subprocess.run([analyze, "verify", "ztproxy.service", "ztproxy.socket"], cwd=tmp,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), "systemd-analyze verify")
        # The offline exposure score (0 = locked down, 10 = exposed); 2.5 or less is "OK".
        r = subprocess.run([analyze, "security", "--offline=true", "--threshold=25", "ztproxy.service"],
                           cwd=tmp, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr)


class Dockerfile(unittest.TestCase):
    # In debian:bookworm-slim already (Priority: required, or pulled in by apt itself).
    BASE = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libgcrypt20", "libgpg-error0", "liblz4-1",
            "libzstd1", "liblzma5", "libcap2"}

    def runtime_packages(self):
        text = (DEPLOY / "Dockerfile").read_text()
        runtime = text[text.rindex("FROM "):]
        install = re.search(r"apt-get install -y -q --no-install-recommends\s*\\\n(.*?)\n \&\&", runtime, re.S)
        self.assertIsNotNone(install, "no apt-get install in the runtime stage")
        return set(install.group(1).replace("\\", " ").split())

    def package_of(self, path):
        for candidate in (path, "/usr" + path):
            r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout.split(":", 1)[0]
        return None

    def test_runtime_stage_installs_every_linked_library(self):
        binary = os.environ.get("ZTPROXY_BIN")
        self.assertTrue(binary, "ZTPROXY_BIN is not set")
        if not shutil.which("dpkg"):
            self.skipTest("not a Debian system")
        ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        libs = re.findall(r"=> (/\S+)", ldd)
        self.assertGreater(len(libs), 10, ldd)
        packages = {lib: self.package_of(lib) for lib in libs}
        self.assertNotIn(None, packages.values(), packages)
        missing = sorted(set(packages.values()) - self.runtime_packages() - self.BASE)
        self.assertEqual(missing, [], "the runtime stage does not install these")

    def test_runs_as_non_root(self):
        text = (DEPLOY / "Dockerfile").read_text()
        self.assertIn("USER 10001:10001", text)


class KernelModule(unittest.TestCase):
    def test_tls_module_is_loaded_at_boot(self):
        self.assertEqual((DEPLOY / "modules-load.d/tls.conf").read_text(), "tls\n")

    def test_manifests_state_the_requirement(self):
        for manifest in sorted((DEPLOY / "k8s").glob("*.yaml")):
            with self.subTest(manifest=manifest.name):
                text = manifest.read_text()
                self.assertIn("`tls` kernel module", text)
                self.assertIn("localhostProfile: profiles/ztproxy.json", text)


if __name__ == "__main__":
    unittest.main()
