"""ztproxy end to end, redaction: routes with [[rule]]s rewrite the plaintext they relay.

What is proven, against the semantics of proxy/redact/rewriter.hpp (computed here independently,
in Python, from the whole stream: the union of every substring a rule matches is masked; runs held
together by overlapping replace spans become one copy of the replacement):
  1. curl POSTs a card number and a bearer token (header and body) on a route with request rules:
     the backend receives exactly curl's bytes with those spans masked ('*', same length), every
     other byte identical. Quick mode (--redact-request) the same.
  2. A response rule masks a backend response on the way back; a request rule never touches a
     response and a response rule never touches a request.
  3. A length-changing replacement ("[REDACTED]", allow_length_change = true) over a raw TLS
     stream to a recording backend: adjacent matches give one copy each, overlapping ones merge.
  4. 64 MiB (mask) and 16 MiB (replacement) raw TLS streams with card numbers planted across TLS
     record edges (writes of many sizes) and TCP segment edges (ciphertext sent in odd slices):
     length and sha256 equal the locally computed expectation.
  5. A route without rules on the same proxy is byte-exact; rule routes are never spliced.
  6. A small request whose tail could begin a match is not held forever (when the input pauses,
     the held bytes a pending match could cover are sent masked, on_pause = "mask"): the echo of
     20 bytes, and a curl GET, come back within bounded time. (Pauses in full: test_redaction_pause.)
  7. `ztproxy check` prints one "rewrite relay, no splice" line per rule route and exits 0.

The backend (backend.py) reports what it received: POST /echo-raw (the exact request bytes),
POST /echo-body, GET /secret, and --mode record (hash + file of every byte of a raw stream).
Bounded waits only; no sleeps.
"""

import hashlib
import os
import random
import re
import socket
import subprocess
import sys
import time
import unittest

import backend as backend_mod
from harness import (BACKEND_PY, READY_TIMEOUT, Backend, BioTlsClient, CertAuthority, E2ETestCase,
                     HttpConn, Proc, _toml, client_context, curl, curl_args, metric, policy_toml,
                     recv_up_to, scrape, tls_connect, ztproxy_bin)

MIB = 1024 * 1024
RECORD = 16384  # TLS max plaintext per record: OpenSSL's client fragments writes at this size

CARD = b"4111 1111 1111 1111"
TOKEN = b"abc.def.ghi"

# ---------------------------------------------------------------------------------------------
# The reference: what the proxy must produce, computed from the whole stream (chunking-invariant).


class RefRule:
    """A rule as the test understands it. `core` is the pattern without its leading/trailing \\b
    (Python re, bytes); lead_b/trail_b say whether the real pattern has them. width bounds the
    candidate lengths the brute force tries."""

    def __init__(self, rid, pattern, core=None, lead_b=False, trail_b=False, max_width=None,
                 literal=False, mask=None, replacement=None, direction="both",
                 case_insensitive=False):
        self.id, self.pattern, self.literal = rid, pattern, literal
        self.direction, self.mask, self.replacement = direction, mask, replacement
        self.case_insensitive = case_insensitive
        if literal:
            core = re.escape(pattern.encode())
            max_width = len(pattern.encode())
        self.core = re.compile(core if isinstance(core, bytes) else core.encode(),
                               re.S | (re.I if case_insensitive else 0))
        self.lead_b, self.trail_b, self.max_width = lead_b, trail_b, max_width

    def toml(self):
        out = ["[[rule]]", "id = %s" % _toml(self.id), "direction = %s" % _toml(self.direction)]
        out.append("%s = %s" % ("literal" if self.literal else "pattern", _toml(self.pattern)))
        if self.case_insensitive:
            out.append("case_insensitive = true")
        if self.mask is not None:
            out.append("mask = %s" % _toml(self.mask))
        if self.replacement is not None:
            out.append("replacement = %s" % _toml(self.replacement))
        return out

    def applies(self, direction):
        return self.direction in ("both", direction)

    @property
    def is_replace(self):
        # A fixed string whose length can differ from the match's (all the replacement rules in
        # these tests have variable-width patterns or other lengths).
        return self.replacement is not None


def _word(b):
    return (0x30 <= b <= 0x39) or (0x41 <= b <= 0x5a) or (0x61 <= b <= 0x7a) or b == 0x5f


def _boundary(data, i):
    before = i > 0 and _word(data[i - 1])
    after = i < len(data) and _word(data[i])
    return before != after


def spans_brute(data, rule):
    """Every [i, j) that the rule's pattern matches, merged per start into [i, longest j).
    O(len * max_width) fullmatch calls: for small inputs."""
    out = []
    n = len(data)
    for i in range(n):
        if rule.core.match(data, i) is None:
            continue  # no match of any length starts here
        if rule.lead_b and not _boundary(data, i):
            continue
        best = None
        for j in range(min(n, i + rule.max_width), i, -1):
            if rule.core.fullmatch(data, i, j) and (not rule.trail_b or _boundary(data, j)):
                best = j
                break
        if best is not None:
            out.append((i, best))
    return out


_CARD_RUN = re.compile(rb"[ 0-9]{0,15}")


def spans_card4111(data):
    """Fast exact spans of `4111[ 0-9]{12,15}` (for big streams): every match starting at p ends
    at p + 4 + m, 12 <= m <= the run of [ 0-9] after "4111" (at most 15)."""
    out = []
    p = data.find(b"4111")
    while p >= 0:
        k = len(_CARD_RUN.match(data, p + 4).group(0))
        if k >= 12:
            out.append((p, p + 4 + k))
        p = data.find(b"4111", p + 1)
    return out


def apply_rules(data, rules, direction, spans_of=None):
    """The expected output of one direction of a route with `rules` (route order)."""
    active = [r for r in rules if r.applies(direction)]
    per_rule = []
    for idx, r in enumerate(active):
        f = (spans_of or {}).get(r.id)
        per_rule.append((idx, r, f(data) if f else spans_brute(data, r)))
    # 1. replace runs: spans of replace rules, merged while they OVERLAP (adjacent ones do not).
    rep = sorted((a, b, idx) for idx, r, sp in per_rule if r.is_replace for a, b in sp)
    runs = []  # [start, end, replacement]
    for a, b, idx in rep:
        if runs and a < runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], b)
        else:
            runs.append([a, b, None])
    for run in runs:
        # the lowest-index replace rule covering the run's first byte
        for idx, r, sp in per_rule:
            if r.is_replace and any(a <= run[0] < b for a, b in sp):
                run[2] = r.replacement.encode()
                break
    # 2. overlays (masks) on what is not swallowed: first-listed covering rule decides.
    out = bytearray(data)
    overlay = [(idx, r, sp) for idx, r, sp in per_rule if not r.is_replace]
    for idx, r, sp in reversed(overlay):  # earlier rules written last: they win
        m = (r.mask or "*").encode()
        for a, b in sp:
            out[a:b] = m * (b - a)
    if not runs:
        return bytes(out)
    pieces, pos = [], 0
    for a, b, text in runs:
        pieces.append(bytes(out[pos:a]))
        pieces.append(text)
        pos = b
    pieces.append(bytes(out[pos:]))
    return b"".join(pieces)


def apply_card_big(data, mask=None, replacement=None):
    """apply_rules for one rule `4111[ 0-9]{12,15}` on a big stream (fast path)."""
    sp = spans_card4111(data)
    if replacement is None:
        out = bytearray(data)
        m = (mask or "*").encode()
        for a, b in sp:
            out[a:b] = m * (b - a)
        return out, len(sp)
    pieces, pos, run = [], 0, None
    for a, b in sp:
        if run and a < run[1]:
            run[1] = max(run[1], b)
            continue
        if run:
            pieces += [data[pos:run[0]], replacement.encode()]
            pos = run[1]
        run = [a, b]
    if run:
        pieces += [data[pos:run[0]], replacement.encode()]
        pos = run[1]
    pieces.append(data[pos:])
    return b"".join(pieces), len(sp)


def first_difference(a, b):
    n = min(len(a), len(b))
    for i in range(0, n, 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            for j in range(i, min(n, i + 4096)):
                if a[j] != b[j]:
                    return j
    return n if len(a) != len(b) else -1


def describe_difference(got, expected, what):
    i = first_difference(got, expected)
    if i < 0:
        return "%s: identical" % what
    lo = max(0, i - 40)
    return ("%s: %d bytes received, %d expected; first difference at offset %d\n"
            "  got      %r\n  expected %r" % (what, len(got), len(expected), i,
                                              got[lo:i + 40], expected[lo:i + 40]))


# The rules the tests use. Widths: hold-back = max_width - 1 (+2 with a trailing \b).
R_CARD_B = RefRule("card", r"\b(?:\d[ -]?){13,16}\b", core=r"(?:\d[ -]?){13,16}", lead_b=True,
                   trail_b=True, max_width=32, direction="request")
R_BEARER = RefRule("bearer", r"Bearer [A-Za-z0-9._~+/=-]{1,128}",
                   core=r"Bearer [A-Za-z0-9._~+/=-]{1,128}", max_width=135, direction="request")
R_CARD_RESP = RefRule("card-resp", r"4111[ 0-9]{12,15}", core=r"4111[ 0-9]{12,15}",
                      max_width=19, direction="response")
R_TOKEN_RESP = RefRule("token-resp", "abc.def.ghi", literal=True, mask="#",
                       direction="response")
R_CARD_MASK = RefRule("card4111", r"4111[ 0-9]{12,15}", core=r"4111[ 0-9]{12,15}",
                      max_width=19, direction="request")
R_CARD_REDACT = RefRule("card-redacted", r"4111[ 0-9]{12,15}", core=r"4111[ 0-9]{12,15}",
                        max_width=19, replacement="[REDACTED]", direction="request")
QUICK_PATTERN = r"4111[ 0-9]{12,15}"

ALL_RULES = [R_CARD_B, R_BEARER, R_CARD_RESP, R_TOKEN_RESP, R_CARD_MASK, R_CARD_REDACT]

# SNI -> (backend, rules, allow_length_change)
ROUTES = [
    ("req.test", "http", [R_CARD_B, R_BEARER], False),
    ("resp.test", "http", [R_CARD_RESP, R_TOKEN_RESP], False),
    ("plain.test", "http", [], False),
    ("mask.test", "record", [R_CARD_MASK], False),
    ("len.test", "record", [R_CARD_REDACT], True),
    ("raw.test", "record", [], False),
    ("echo.test", "echo", [R_CARD_MASK], False),
    ("plainecho.test", "echo", [], False),
]
NAMES = [r[0] for r in ROUTES] + ["localhost"]
# The bulk streams compare against an expectation computed from the whole stream: a scheduling
# pause mid-stream must not mask a near miss there (on_pause = "mask" would, by design), so these
# routes hold pending bytes until the match resolves or the stream half-closes.
HOLD_ROUTES = {"mask.test", "len.test", "holdecho.test"}  # holdecho.test: tests/ktls


def redaction_policy(leaf, backends, routes=ROUTES, rules=ALL_RULES, sections=None):
    """policy_toml() for listeners/backends (it forces ZTP_E2E_RECORD_PATH), then routes with
    rules and the [[rule]] tables. backends: {"http": addr, "record": addr, "echo": addr}."""
    text = policy_toml(
        listeners=[{"name": "main", "certs": [("main", leaf, None)]}],
        backends=[{"name": k, "addresses": [v]} for k, v in backends.items()],
        routes=[], sections=sections or {"limits": {"idle_timeout": "60s"}})
    out = [text]
    for name, be, rr, alc in routes:
        out += ["[[route]]", "server_names = %s" % _toml([name]), "backend = %s" % _toml(be)]
        if rr:
            out.append("rules = %s" % _toml([r.id for r in rr]))
        if alc:
            out.append("allow_length_change = true")
        if name in HOLD_ROUTES:
            out.append('on_pause = "hold"')
        out.append("")
    out += ["[[route]]", "default = true", 'backend = "http"', ""]
    for r in rules:
        out += r.toml() + [""]
    return "\n".join(out)


class RecordBackend(Backend):
    """backend.py --mode record, keeping every connection's bytes in `directory`."""

    def __init__(self, directory):
        Proc.__init__(self, "backend(record)", [sys.executable, BACKEND_PY, "--mode", "record",
                                                "--record-dir", directory])
        try:
            m = self.wait_line("stdout", r"^LISTENING (\d+)$", READY_TIMEOUT,
                               what="backend readiness")
        except BaseException:
            self.kill()
            raise
        self.port = int(m.group(1))
        self.address = "127.0.0.1:%d" % self.port

    def mark(self):
        return len(self.out.snapshot())

    def closed(self, mark, timeout=60):
        m = self.wait_event(r"^RECORD_CLOSED peer=\S+ bytes=(\d+) sha256=(\S+) file=(\S+) "
                            r"reason=(\S+)$", timeout=timeout, start=mark)
        return int(m.group(1)), m.group(2), m.group(3), m.group(4)


def curl_trace_sent(path):
    """The application bytes curl sent ("=> Send header" / "=> Send data" blocks of --trace)."""
    out = bytearray()
    take = False
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith("=> ") or line.startswith("<= ") or line.startswith("== "):
                take = line.startswith("=> Send header") or line.startswith("=> Send data")
                continue
            if take and re.match(r"^[0-9a-f]{4}: ", line):
                out += bytes.fromhex(line[6:6 + 48].replace(" ", ""))
    return bytes(out)


def raw_request_event(backend, mark, timeout=20):
    m = backend.wait_event(r"^RAW_REQUEST peer=\S+ length=(\d+) hex=([0-9a-f]+)$",
                           timeout=timeout, start=mark)
    data = bytes.fromhex(m.group(2))
    assert len(data) == int(m.group(1))
    return data


def echo_body_event(backend, mark, timeout=20):
    m = backend.wait_event(r"^ECHO_BODY peer=\S+ length=(\d+) sha256=\S+ hex=([0-9a-f]*)$",
                           timeout=timeout, start=mark)
    return bytes.fromhex(m.group(2))


# ---------------------------------------------------------------------------------------------
# Streams for 3 and 4


def write_plan(total, seed):
    """Write sizes (OpenSSL makes one record per 16384 bytes of each write) and the plaintext
    offsets where records start."""
    rnd = random.Random(seed)
    sizes_pool = [1, 3, 17, 100, 1000, 4095, 16383, 16384, 16385, 20000, 32768, 65536, 100000,
                  262144]
    sizes, edges, off = [], [], 0
    while off < total:
        n = min(rnd.choice(sizes_pool), total - off)
        sizes.append(n)
        for e in range(off, off + n, RECORD):
            edges.append(e)
        off += n
    return sizes, edges


def planted_stream(total, seed, every=100 * 1024):
    """pattern bytes with a card number about every `every` bytes. Most straddle a record edge
    (at every offset of the card), some sit inside a record, and near misses (too short to match)
    straddle edges too. Returns (data, write sizes, number of full cards planted)."""
    sizes, edges = write_plan(total, seed)
    data = bytearray()
    for c in backend_mod.pattern_chunks(total):
        data += c
    rnd = random.Random(seed + 1)
    near_miss = b"4111 1111 1111"  # 4 + 10 [ 0-9]: needs 12
    planted = 0
    k = 0
    pos = 1000
    ei = 0
    while pos < total - 200:
        while ei < len(edges) and edges[ei] < pos:
            ei += 1
        kind = k % 5
        if kind in (0, 1, 2) and ei < len(edges) and edges[ei] < total - 100:
            # straddle the next record edge at offset (k % 20) into the card (0 = starts at it)
            start = edges[ei] - (k % (len(CARD) + 1))
            data[start:start + len(CARD)] = CARD
            planted += 1
        elif kind == 3:
            start = pos + rnd.randrange(0, 4096)
            data[start:start + len(CARD)] = CARD
            planted += 1
        else:
            if ei < len(edges) and edges[ei] < total - 100:
                start = edges[ei] - (k % len(near_miss))
                data[start:start + len(near_miss)] = near_miss
                # what follows must not be [ 0-9] (else it would become a match): force a letter
                data[start + len(near_miss)] = ord("x")
        k += 1
        pos += every
    return data, sizes, planted  # a bytearray: 64 MiB are not copied once more


def send_planned(client, data, sizes, seed):
    """BioTlsClient: each planned write is one SSL write (records cut at 16384 within it); the
    ciphertext goes out in odd slices with TCP_NODELAY, so record headers straddle segments."""
    client.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rnd = random.Random(seed + 2)
    slices = [3, 517, 1400, 16000, 16406, 70000]
    off = 0
    for n in sizes:
        client.obj.write(data[off:off + n])
        off += n
        ct = client.out.read()
        i = 0
        while i < len(ct):
            step = rnd.choice(slices)
            client.raw.sendall(ct[i:i + step])
            i += step
    assert off == len(data)


def stream_through(port, sni, cafile, data, sizes, seed, timeout=120):
    """Sends data as planned, half-closes, returns the record backend's reply and how the
    connection ended."""
    ctx = client_context(cafile)
    c = BioTlsClient(port, sni, ctx, timeout=timeout)
    try:
        send_planned(c, data, sizes, seed)
        c.half_close()
        got, how = c.read_until_close()
    finally:
        c.close()
    return got, how


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------------------------------------


class RedactionTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ca = CertAuthority(os.path.join(cls.class_tmp, "pki"))
        cls.leaf = cls.ca.issue("leaf", "ec", dns=NAMES)

    def setUp(self):
        super().setUp()
        self.http = self.start_backend("http")
        self.echo = self.start_backend("echo")
        self.rec_dir = os.path.join(self.tmp, "rec")
        os.makedirs(self.rec_dir)
        self.record = RecordBackend(self.rec_dir)
        self.addCleanup(self.record.stop)
        self.policy_text = redaction_policy(self.leaf, {"http": self.http.address,
                                                        "record": self.record.address,
                                                        "echo": self.echo.address})
        self.proxy = self.start_policy_proxy(self.policy_text)
        self.port = self.proxy.port

    # ------------------------------------------------------------------ helpers

    def access_for(self, sni, count=1, timeout=30):
        return self.proxy.wait_access(lambda e: e.get("sni") == sni, count=count, timeout=timeout,
                                      what="for sni=%s" % sni)

    def assert_not_spliced(self, e, what):
        self.assertEqual((e.get("spliced_up"), e.get("spliced_down")), (0, 0),
                         "%s: a rule route must take the rewrite relay, never splice: %r"
                         % (what, e))

    def curl_post_raw(self, sni, body, headers=(), port=None):
        trace = os.path.join(self.tmp, "trace-%s-%d.txt" % (sni, time.monotonic_ns()))
        args = ["--trace", trace, "-H", "User-Agent: ztp-redaction-test",
                "-H", "Content-Type: application/octet-stream", "--data-binary", "@-"]
        for h in headers:
            args += ["-H", h]
        args += curl_args(sni, port or self.port, "/echo-raw", self.ca.cert)
        argv = ["curl", "-sS", "--connect-timeout", "10", "--max-time", "20"] + args
        p = subprocess.run(argv, input=body, capture_output=True, timeout=40)
        self.assertEqual(p.returncode, 0, "curl %s: %s\n%s" % (" ".join(argv), p.stderr,
                                                              self.proxy.diag()))
        return curl_trace_sent(trace), p.stdout

    # ------------------------------------------------------------------ 1

    def test_curl_post_card_and_bearer_masked_everything_else_identical(self):
        body = (b"name=alice&card=4111 1111 1111 1111&amount=12.50&note=ok\n"
                b"second 5500-0000-0000-0004 end; short 1234 5678 stays\n"
                b"token: Bearer abc.def.ghi; trailing text\n" + b"x" * 300 + b"\n")
        mark = len(self.http.out.snapshot())
        sent, echoed = self.curl_post_raw("req.test", body,
                                          headers=["Authorization: Bearer abc.def.ghi"])
        self.assertTrue(sent.endswith(body), "could not read what curl sent from --trace")
        got = raw_request_event(self.http, mark)
        expected = apply_rules(sent, [R_CARD_B, R_BEARER], "request")
        # The reference itself must have masked what the test is about.
        for secret in (CARD, b"5500-0000-0000-0004", TOKEN):
            self.assertNotIn(secret, expected)
        self.assertIn(b"1234 5678 stays", expected)
        self.assertEqual(len(expected), len(sent))
        self.assertEqual(got, expected, describe_difference(got, expected, "backend received")
                         + "\n" + self.proxy.diag())
        # No response rule on this route: the backend's answer (the request it got) comes back as is.
        self.assertEqual(echoed, got)
        [e] = self.access_for("req.test")
        self.assert_not_spliced(e, "req.test")
        self.assertEqual(e["close"], "client_close", e)

    def test_quick_mode_redact_request(self):
        proxy = self.start_proxy(["run", "--listen", "127.0.0.1:0", "--backend", self.http.address,
                                  "--cert", self.leaf.cert, "--key", self.leaf.key,
                                  "--redact-request", QUICK_PATTERN, "--redact-response", "SECRET-[0-9]{4}",
                                  "--admin", "127.0.0.1:0"])
        admin = proxy.admin_address()
        body = b"card=4111 1111 1111 1111&cvv=123&again=41111111111111111 done\n"
        mark = len(self.http.out.snapshot())
        sent, echoed = self.curl_post_raw("localhost", body, port=proxy.port)
        got = raw_request_event(self.http, mark)
        rule = RefRule("q", QUICK_PATTERN, core=QUICK_PATTERN, max_width=19, direction="request")
        expected = apply_rules(sent, [rule], "request")
        self.assertNotIn(b"4111 1111", expected)
        self.assertEqual(got, expected, describe_difference(got, expected, "backend received")
                         + "\n" + proxy.diag())
        self.assertEqual(echoed, got)  # the echo has no SECRET-nnnn: the response rule never fires
        [e] = proxy.wait_access(lambda e: e.get("sni") == "localhost")
        self.assert_not_spliced(e, "quick mode")
        # /metrics: one match per card (not per engine report), every request byte inspected,
        # the masks are the only bytes written, nothing verified was copied.
        status, text = scrape(admin)
        self.assertEqual(status, 200)
        masked = sum(1 for a, b in zip(sent, got) if a != b)
        self.assertEqual(metric(text, "ztproxy_redaction_matches_total", rule="request-1",
                                direction="request"), 2)
        self.assertEqual(metric(text, "ztproxy_redaction_matches_total", rule="response-1",
                                direction="response"), 0)
        self.assertEqual(metric(text, "ztproxy_redaction_inspected_bytes_total", direction="request"),
                         len(sent))
        self.assertEqual(metric(text, "ztproxy_redaction_inspected_bytes_total", direction="response"),
                         e["bytes_down"])
        self.assertEqual(metric(text, "ztproxy_redaction_replacement_bytes_total", direction="request"),
                         masked)
        for d in ("request", "response"):
            self.assertEqual(metric(text, "ztproxy_redaction_copied_bytes_total", direction=d), 0)

    # ------------------------------------------------------------------ 2

    def _http(self, sni, method, path, body=None):
        with tls_connect(self.port, sni, self.ca.cert, timeout=20) as s:
            conn = HttpConn(s)
            conn.request(method, path, sni, body=body, headers={"Connection": "close"})
            return conn.response()

    def test_response_rule_masks_responses_and_directions_stay_apart(self):
        secret_masked = apply_rules(backend_mod.SECRET_BODY, [R_CARD_RESP, R_TOKEN_RESP],
                                    "response")
        self.assertEqual(secret_masked,
                         b"account=*******************; auth=Bearer ###########; end\n")
        # a. response rules mask the response
        r = self._http("resp.test", "GET", "/secret")
        self.assertEqual((r.status, r.body), (200, secret_masked), self.proxy.diag())
        # b. ...and leave the request alone: the backend gets the card, the echo comes back masked
        body = b"pay with 4111 1111 1111 1111 and token abc.def.ghi please\n"
        mark = len(self.http.out.snapshot())
        r = self._http("resp.test", "POST", "/echo-body", body)
        self.assertEqual(echo_body_event(self.http, mark), body,
                         "a response rule touched the request")
        self.assertEqual((r.status, r.body),
                         (200, apply_rules(body, [R_CARD_RESP, R_TOKEN_RESP], "response")))
        self.assertNotIn(b"4111 1111", r.body)
        # c. request rules leave the response alone
        r = self._http("req.test", "GET", "/secret")
        self.assertEqual((r.status, r.body), (200, backend_mod.SECRET_BODY),
                         "a request rule touched the response")
        # d. ...and mask the request: the backend got it masked and says so in its echo
        mark = len(self.http.out.snapshot())
        r = self._http("req.test", "POST", "/echo-body", body)
        want = apply_rules(body, [R_CARD_B, R_BEARER], "request")
        # No "Bearer " in this body; the card's trailing space is part of the match (\b before "and").
        self.assertEqual(want, body.replace(CARD + b" ", b"*" * (len(CARD) + 1)))
        self.assertEqual(echo_body_event(self.http, mark), want)
        self.assertEqual((r.status, r.body), (200, want))
        for e in self.access_for("resp.test", 2) + self.access_for("req.test", 2):
            self.assert_not_spliced(e, e.get("sni"))

    # ------------------------------------------------------------------ 3

    def _len_stream(self, data, sizes, seed):
        expected = apply_rules(data, [R_CARD_REDACT], "request")
        mark = self.record.mark()
        reply, how = stream_through(self.port, "len.test", self.ca.cert, data, sizes, seed)
        n, digest, path, reason = self.record.closed(mark)
        with open(path, "rb") as f:
            got = f.read()
        self.assertEqual(got, expected, describe_difference(got, expected, "backend received")
                         + "\n" + self.proxy.diag())
        self.assertEqual((reply, how, reason),
                         (b"RECORDED %d %s\n" % (len(expected), sha(expected).encode()),
                          "close_notify", "eof"))
        return expected

    def test_single_length_changing_replacement(self):
        # One match, one write: the smallest case (the replacement is the plan's only own bytes).
        data = b"before 4111 1111 1111 1111 after\n"
        self.assertEqual(self._len_stream(data, [len(data)], 1),
                         b"before [REDACTED] after\n")
        [e] = self.access_for("len.test")
        self.assert_not_spliced(e, "len.test")

    def test_length_changing_replacement_over_raw_tls(self):
        parts = [
            b"start ", CARD, b" middle ",  # one match
            CARD + CARD,                   # adjacent, not overlapping: two copies
            b" sep ", b"4111 4111 1111 1111 1111",  # overlapping matches: one run, one copy
            b" near 4111 1111 111x miss ",  # too short
            b"4111111111111111", b"|", b"41111111111111111111111",  # 16 and 23 digits
            b" end\n"]
        data = b"".join(parts) * 50
        expected = apply_rules(data, [R_CARD_REDACT], "request")
        self.assertEqual(expected[:len(b"start [REDACTED] middle [REDACTED][REDACTED] sep "
                                       b"[REDACTED] near")],
                         b"start [REDACTED] middle [REDACTED][REDACTED] sep [REDACTED] near")
        self.assertNotEqual(len(expected), len(data))
        sizes = [7, 1, 40, 333, 2, 1000, 5] * 200
        total, sizes2 = 0, []
        for n in sizes:
            n = min(n, len(data) - total)
            if n <= 0:
                break
            sizes2.append(n)
            total += n
        if total < len(data):
            sizes2.append(len(data) - total)
        self._len_stream(data, sizes2, 3)
        [e] = self.access_for("len.test")
        self.assert_not_spliced(e, "len.test")

    # ------------------------------------------------------------------ 4

    def _big_stream(self, sni, total, seed, replacement=None):
        data, sizes, planted = planted_stream(total, seed)
        expected, nspans = apply_card_big(data, replacement=replacement)
        self.assertGreaterEqual(nspans, planted)  # every planted card is a match
        self.assertGreater(planted, total // (100 * 1024) // 2)
        want_sha = sha(expected)
        mark = self.record.mark()
        t0 = time.monotonic()
        reply, how = stream_through(self.port, sni, self.ca.cert, data, sizes, seed, timeout=120)
        n, digest, path, reason = self.record.closed(mark, timeout=120)
        took = time.monotonic() - t0
        if (n, digest) != (len(expected), want_sha):
            with open(path, "rb") as f:
                got = f.read()
            self.fail(describe_difference(got, expected, "%s %d MiB stream" % (sni, total // MIB))
                      + "\n" + self.proxy.diag())
        self.assertEqual((reply, how, reason),
                         (b"RECORDED %d %s\n" % (len(expected), want_sha.encode()),
                          "close_notify", "eof"))
        os.unlink(path)
        [e] = self.access_for(sni)
        self.assert_not_spliced(e, sni)
        self.assertEqual(e["close"], "client_close", e)
        if replacement is None:
            self.assertEqual(e["bytes_up"], total, e)  # masking keeps the length
        return planted, took

    def test_64mib_mask_across_record_and_segment_edges(self):
        planted, took = self._big_stream("mask.test", 64 * MIB, seed=64)
        print("\n  64 MiB, %d cards planted, %.1fs" % (planted, took), file=sys.stderr)

    def test_16mib_replacement_across_record_and_segment_edges(self):
        planted, took = self._big_stream("len.test", 16 * MIB, seed=16,
                                         replacement="[REDACTED]")
        print("\n  16 MiB replaced, %d cards planted, %.1fs" % (planted, took), file=sys.stderr)

    # ------------------------------------------------------------------ 5

    def test_route_without_rules_is_byte_exact(self):
        # Raw stream with cards at record edges, through the rule-less route of the same proxy.
        data, sizes, planted = planted_stream(4 * MIB, seed=5)
        mark = self.record.mark()
        reply, how = stream_through(self.port, "raw.test", self.ca.cert, data, sizes, seed=5)
        n, digest, path, reason = self.record.closed(mark)
        self.assertEqual((n, digest), (len(data), sha(data)), "raw.test changed bytes")
        self.assertEqual((reply, how), (b"RECORDED %d %s\n" % (len(data), sha(data).encode()),
                                        "close_notify"))
        # HTTP: curl's exact bytes (the same request a rule route masks) reach the backend.
        body = b"card=4111 1111 1111 1111\nBearer abc.def.ghi\n"
        mark = len(self.http.out.snapshot())
        sent, echoed = self.curl_post_raw("plain.test", body,
                                          headers=["Authorization: Bearer abc.def.ghi"])
        got = raw_request_event(self.http, mark)
        self.assertEqual(got, sent, describe_difference(got, sent, "plain.test"))
        self.assertEqual(echoed, sent)
        r = self._http("plain.test", "GET", "/secret")
        self.assertEqual(r.body, backend_mod.SECRET_BODY)
        [e] = self.access_for("raw.test")
        self.assertEqual((e["bytes_up"], e["close"]), (len(data), "client_close"), e)

    # ------------------------------------------------------------------ 6

    def test_small_request_is_not_held_when_input_goes_quiet(self):
        head = b"hello, world!!! 4111"  # 20 bytes; "4111" could begin a card number
        self.assertEqual(len(head), 20)
        with tls_connect(self.port, "echo.test", self.ca.cert, timeout=20) as s:
            s.settimeout(10)
            t0 = time.monotonic()
            s.sendall(head)
            got = recv_up_to(s, len(head))
            waited = time.monotonic() - t0
            # "4111" could begin a card: at the pause it went out masked (fail closed).
            self.assertEqual(got, head[:-4] + b"****", "after %.1fs the echo backend had returned %r of a "
                             "%d-byte request (held bytes never flushed?)\n%s"
                             % (waited, got, len(head), self.proxy.diag()))
            # The match completes later: its unsent bytes are masked too.
            tail = b" 1111 1111 1111 end\n"
            s.sendall(tail)
            want = b"*" * 15 + b" end\n"
            got = recv_up_to(s, len(want))
            self.assertEqual(got, want, self.proxy.diag())
            s.unwrap()
        # An HTTP request smaller than the bearer rule's hold-back (134 bytes) gets its answer.
        t0 = time.monotonic()
        r = curl(curl_args("req.test", self.port, "/", self.ca.cert), timeout=10)
        self.assertEqual((r.returncode, r.stdout), (0, b"ztproxy e2e backend\n"),
                         "curl GET on a rule route (%.1fs): %s\n%s"
                         % (time.monotonic() - t0, r.stderr, self.proxy.diag()))


class RedactionCheckTest(E2ETestCase):
    """7. `ztproxy check` (no processes needed)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ca = CertAuthority(os.path.join(cls.class_tmp, "pki"))
        cls.leaf = cls.ca.issue("leaf", "ec", dns=NAMES)

    def test_check_prints_the_rewrite_relay_per_rule_route(self):
        text = redaction_policy(self.leaf, {"http": "127.0.0.1:1", "record": "127.0.0.1:2",
                                            "echo": "127.0.0.1:3"})
        path = self.write_policy(text, "check.toml")
        p = subprocess.run([ztproxy_bin(), "check", "-c", path], capture_output=True, timeout=30)
        out = p.stdout.decode()
        self.assertEqual(p.returncode, 0, out + p.stderr.decode())
        self.assertIn(": OK (", out)
        lines = [l for l in out.splitlines() if "rewrite relay" in l]
        rule_routes = [r for r in ROUTES if r[2]]
        self.assertEqual(len(lines), len(rule_routes), out)
        for name, _, rules, alc in rule_routes:
            [line] = [l for l in lines if "'%s'" % name in l]
            self.assertIn("no splice", line)
            for r in rules:
                self.assertIn(r.id, line)
            self.assertEqual("length may change" in line, alc, line)
        for name, _, rules, _ in ROUTES:
            if not rules:
                self.assertNotIn("'%s'" % name, out)


if __name__ == "__main__":
    unittest.main()
