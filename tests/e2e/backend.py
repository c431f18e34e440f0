#!/usr/bin/env python3
"""The plaintext backend the e2e tests put behind ztproxy (Python 3 stdlib only).

    python3 backend.py [--mode http|echo|record|stall] [--host 127.0.0.1] [--port 0] [--record-dir DIR]
                       [--proxy-protocol v2]

Binds (port 0 by default) and prints ``LISTENING <port>`` on stdout as its first line: that is
the readiness signal. Afterwards it prints one event line per noteworthy thing, so tests can wait
for what the backend saw instead of sleeping:

    ECHO_CLOSED peer=IP:PORT bytes=N reason=eof|reset|error
    BYTES_DONE peer=IP:PORT sent=N
    BYTES_ABORTED peer=IP:PORT sent=N reason=...
    SHA256_DONE peer=IP:PORT length=N
    RAW_REQUEST peer=IP:PORT length=N hex=HEX          (http mode, POST /echo-raw)
    ECHO_BODY peer=IP:PORT length=N sha256=HEX hex=HEX  (http mode, POST /echo-body)
    RECORD_CLOSED peer=IP:PORT bytes=N sha256=HEX file=PATH|- reason=eof|reset|error  (record mode)
    STALL_ACCEPTED peer=IP:PORT                        (stall mode)
    PROXY_HEADER peer=IP:PORT json={...}               (--proxy-protocol v2, see parse_proxy_v2)
    PROXY_ERROR peer=IP:PORT reason=...                 (--proxy-protocol v2, no valid header)

With --proxy-protocol v2 every connection must start with a PROXY protocol v2 header (HAProxy's
doc/proxy-protocol.txt); it is decoded and reported, then the mode goes on with the bytes after
it. A connection without a valid header is closed.

HTTP mode (HTTP/1.1, keep-alive, every response has a Content-Length):
    GET /              -> "ztproxy e2e backend\\n" (text/plain)
    GET /bytes/N       -> N bytes of pattern_chunks(N), streamed in chunks
    POST /sha256       -> reads Content-Length bytes in chunks, answers JSON
                          {"sha256": hex, "length": n}
    GET /echo-headers  -> JSON {"method", "path", "client", "headers": [[name, value], ...]}
    GET /secret        -> SECRET_BODY (a card number and a bearer token), for redaction tests
    POST /echo-body    -> the request body, exactly (Content-Length framing); event ECHO_BODY
    POST /echo-raw     -> the exact bytes of this request as received (request line, headers,
                          body), as the response body; event RAW_REQUEST with them in hex
    anything else      -> 404

Echo mode: raw TCP, every byte received is sent back; EOF from the peer -> shutdown(SHUT_WR).

Record mode: raw TCP, sends nothing while it reads; every byte received is hashed (and written to
DIR/conn-K.bin with --record-dir). At EOF from the peer it answers one line
``RECORDED <bytes> <sha256hex>\n``, then shutdown(SHUT_WR), and prints RECORD_CLOSED.

Stall mode: raw TCP, accepts and then never reads nor writes (a backend that stopped reading);
the connection stays open until the process ends. The test's flood fills the proxy's buffers.

The module is also imported by the tests for pattern_chunks()/pattern_sha256().
"""

import argparse
import hashlib
import ipaddress
import json
import os
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024
_print_lock = threading.Lock()
# GET /secret's body: what a response-direction redaction rule must mask on the way back.
SECRET_BODY = b"account=4111 1111 1111 1111; auth=Bearer abc.def.ghi; end\n"
HEX_EVENT_MAX = 64 * 1024  # bodies larger than this are not printed in hex


def pattern_chunks(n, chunk=CHUNK):
    """Yields the deterministic byte stream of length n, chunk by chunk (never n bytes at once).

    Chunk k (all of size `chunk`, the last one cut short) is SHAKE-256 of b"ztp-bytes" + k as 8
    big-endian bytes: incompressible, different everywhere, and cheap to recompute in a test.
    """
    k = 0
    left = n
    while left > 0:
        size = min(chunk, left)
        yield hashlib.shake_256(b"ztp-bytes" + k.to_bytes(8, "big")).digest(chunk)[:size]
        left -= size
        k += 1


def pattern_sha256(n):
    h = hashlib.sha256()
    for c in pattern_chunks(n):
        h.update(c)
    return h.hexdigest()


PP2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_SSL_SUBTYPES = {0x21: "version", 0x22: "cn", 0x23: "cipher"}
PP2_TYPES = {0x01: "alpn", 0x02: "authority", 0xE0: "subject"}  # 0xE0: ztproxy's client subject


def _tlvs(data, what):
    """[(type, value bytes)] of a TLV list that must fill `data` exactly."""
    out, i = [], 0
    while i < len(data):
        if i + 3 > len(data):
            raise ValueError("%s: TLV header cut short" % what)
        t, n = data[i], int.from_bytes(data[i + 1:i + 3], "big")
        if i + 3 + n > len(data):
            raise ValueError("%s: TLV 0x%02x runs past its container" % (what, t))
        out.append((t, data[i + 3:i + 3 + n]))
        i += 3 + n
    return out


def parse_proxy_v2(read):
    """Reads one PROXY v2 header with read(n) (n bytes, fewer only at EOF) and decodes it:
    {"length", "family": "TCP4"|"TCP6", "src", "src_port", "dst", "dst_port", "tlv_types": [...],
     "alpn", "authority", "subject", "ssl": {"client", "verify", "version", "cn", "cipher"}}
    (TLV keys only when present; strings decoded as UTF-8). Raises ValueError when malformed,
    including a repeated TLV and unknown TLV types (the sender is ztproxy: it sends no others)."""
    head = read(16)
    if len(head) < 16 or head[:12] != PP2_SIGNATURE:
        raise ValueError("no PROXY v2 signature")
    if head[12] != 0x21:
        raise ValueError("version/command 0x%02x, expected 0x21 (v2, PROXY)" % head[12])
    size = {0x11: 4, 0x21: 16}.get(head[13])
    if size is None:
        raise ValueError("family/transport 0x%02x" % head[13])
    length = int.from_bytes(head[14:16], "big")
    body = read(length)
    if len(body) != length or length < 2 * size + 4:
        raise ValueError("header cut short: %d of %d bytes" % (len(body), length))
    out = {"length": 16 + length, "family": "TCP4" if size == 4 else "TCP6",
           "src": str(ipaddress.ip_address(body[:size])),
           "dst": str(ipaddress.ip_address(body[size:2 * size])),
           "src_port": int.from_bytes(body[2 * size:2 * size + 2], "big"),
           "dst_port": int.from_bytes(body[2 * size + 2:2 * size + 4], "big"), "tlv_types": []}
    for t, v in _tlvs(body[2 * size + 4:], "header"):
        out["tlv_types"].append(t)
        if t in PP2_TYPES:
            key = PP2_TYPES[t]
        elif t == 0x20:
            key = "ssl"
        else:
            raise ValueError("unexpected TLV type 0x%02x" % t)
        if key in out:
            raise ValueError("TLV 0x%02x repeated" % t)
        if key != "ssl":
            out[key] = v.decode("utf-8")
            continue
        if len(v) < 5:
            raise ValueError("SSL TLV shorter than 5 bytes")
        ssl_info = {"client": v[0], "verify": int.from_bytes(v[1:5], "big")}
        for st, sv in _tlvs(v[5:], "SSL TLV"):
            name = PP2_SSL_SUBTYPES.get(st)
            if name is None or name in ssl_info:
                raise ValueError("unexpected or repeated SSL sub-TLV 0x%02x" % st)
            ssl_info[name] = sv.decode("utf-8")
        out["ssl"] = ssl_info
    return out


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def take_proxy_header(server, read, client_address):
    """With --proxy-protocol v2: reads and reports the header; False when the connection must
    be dropped (no valid header)."""
    if not getattr(server, "proxy_protocol", None):
        return True
    try:
        info = parse_proxy_v2(read)
    except (ValueError, UnicodeDecodeError, OSError) as e:
        emit("PROXY_ERROR peer=%s reason=%s" % (peer_str(client_address), str(e).replace(" ", "_")))
        return False
    emit("PROXY_HEADER peer=%s json=%s" % (peer_str(client_address),
                                           json.dumps(info, separators=(",", ":"))))
    return True


def emit(line):
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def peer_str(addr):
    try:
        return "%s:%d" % (addr[0], addr[1])
    except (TypeError, IndexError):
        return str(addr)


class _HeadTee:
    """Wraps the handler's rfile: every readline() (the request line and the headers) is also
    kept in .head, so that POST /echo-raw can report the exact bytes received. read() is passed
    through unrecorded (bodies are read by the handlers themselves)."""

    def __init__(self, f):
        self._f = f
        self.head = bytearray()

    def readline(self, *a):
        line = self._f.readline(*a)
        self.head += line
        return line

    def read(self, *a):
        return self._f.read(*a)

    def __getattr__(self, name):
        return getattr(self._f, name)


class HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; also makes Expect: 100-continue work
    server_version = "ztp-e2e-backend"
    sys_version = ""

    def setup(self):
        super().setup()
        self.header_ok = take_proxy_header(self.server, self.rfile.read, self.client_address)
        self.rfile = _HeadTee(self.rfile)

    def handle(self):
        if self.header_ok:
            super().handle()

    def handle_one_request(self):
        self.rfile.head.clear()  # one request's head at a time
        super().handle_one_request()

    def log_message(self, fmt, *args):  # keep stderr for real problems
        pass

    def _send(self, status, body, ctype="text/plain; charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, b"ztproxy e2e backend\n")
        elif path.startswith("/bytes/"):
            try:
                n = int(path[len("/bytes/"):])
                if n < 0:
                    raise ValueError
            except ValueError:
                self._send(400, b"bad length\n")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            sent = 0
            try:
                for c in pattern_chunks(n):
                    self.wfile.write(c)
                    sent += len(c)
                self.wfile.flush()
            except OSError as e:  # BrokenPipe, ConnectionReset, ...
                emit("BYTES_ABORTED peer=%s sent=%d reason=%s"
                     % (peer_str(self.client_address), sent, type(e).__name__))
                self.close_connection = True
                return
            emit("BYTES_DONE peer=%s sent=%d" % (peer_str(self.client_address), sent))
        elif path == "/secret":
            self._send(200, SECRET_BODY)
        elif path == "/echo-headers":
            body = json.dumps({
                "method": self.command,
                "path": self.path,
                "client": peer_str(self.client_address),
                "headers": [[k, v] for k, v in self.headers.items()],
            }).encode()
            self._send(200, body, "application/json")
        else:
            self._send(404, b"not found\n")

    do_HEAD = do_GET

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        length_hdr = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length_hdr is None:
            self.close_connection = True
            self._send(411, b"Content-Length required\n")
            return
        try:
            length = int(length_hdr)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._send(400, b"bad Content-Length\n")
            return
        head = bytes(self.rfile.head)
        keep = path in ("/echo-body", "/echo-raw")
        body = bytearray()
        h = hashlib.sha256()
        left = length
        while left > 0:
            c = self.rfile.read(min(CHUNK, left))
            if not c:
                self.close_connection = True
                return  # client went away mid-body
            h.update(c)
            if keep:
                body += c
            left -= len(c)
        if path == "/echo-body":
            emit("ECHO_BODY peer=%s length=%d sha256=%s hex=%s" % (
                peer_str(self.client_address), length, h.hexdigest(),
                bytes(body).hex() if length <= HEX_EVENT_MAX else "-"))
            self._send(200, bytes(body), "application/octet-stream")
            return
        if path == "/echo-raw":
            raw = head + bytes(body)
            emit("RAW_REQUEST peer=%s length=%d hex=%s" % (
                peer_str(self.client_address), len(raw),
                raw.hex() if len(raw) <= HEX_EVENT_MAX else "-"))
            self._send(200, raw, "application/octet-stream")
            return
        if path != "/sha256":
            self._send(404, b"not found\n")
            return
        emit("SHA256_DONE peer=%s length=%d" % (peer_str(self.client_address), length))
        body = json.dumps({"sha256": h.hexdigest(), "length": length}).encode()
        self._send(200, body, "application/json")


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client resetting is normal in these tests


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        if not take_proxy_header(self.server, lambda n: recv_exact(sock, n), self.client_address):
            return
        total = 0
        reason = "eof"
        try:
            while True:
                data = sock.recv(CHUNK)
                if not data:
                    break
                sock.sendall(data)
                total += len(data)
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except ConnectionResetError:
            reason = "reset"
        except OSError as e:
            reason = "error:" + type(e).__name__
        emit("ECHO_CLOSED peer=%s bytes=%d reason=%s" % (peer_str(self.client_address), total, reason))


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass


class RecordHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        if not take_proxy_header(self.server, lambda n: recv_exact(sock, n), self.client_address):
            return
        h = hashlib.sha256()
        total = 0
        reason = "eof"
        path = "-"
        out = None
        rec_dir = self.server.record_dir
        if rec_dir:
            with self.server.counter_lock:
                self.server.counter += 1
                k = self.server.counter
            path = os.path.join(rec_dir, "conn-%d.bin" % k)
            out = open(path, "wb")
        try:
            while True:
                data = sock.recv(CHUNK)
                if not data:
                    break
                h.update(data)
                total += len(data)
                if out:
                    out.write(data)
            if out:
                out.close()
                out = None
            try:
                sock.sendall(b"RECORDED %d %s\n" % (total, h.hexdigest().encode()))
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except ConnectionResetError:
            reason = "reset"
        except OSError as e:
            reason = "error:" + type(e).__name__
        finally:
            if out:
                out.close()
        emit("RECORD_CLOSED peer=%s bytes=%d sha256=%s file=%s reason=%s" % (
            peer_str(self.client_address), total, h.hexdigest(), path, reason))


class RecordServer(EchoServer):
    record_dir = None
    counter = 0
    counter_lock = threading.Lock()


class StallHandler(socketserver.BaseRequestHandler):
    def handle(self):
        emit("STALL_ACCEPTED peer=%s" % peer_str(self.client_address))
        # Never read: the kernel's receive buffer fills, then the proxy's side of the connection.
        # The handler thread parks for the life of the process (a daemon thread: it ends with it).
        self.server.forever.wait()


class StallServer(EchoServer):
    forever = threading.Event()  # never set


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["http", "echo", "record", "stall"], default="http")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--record-dir", default=None, help="record mode: keep each connection's bytes")
    ap.add_argument("--proxy-protocol", choices=["v2"], default=None,
                    help="every connection starts with a PROXY v2 header: decode and report it")
    args = ap.parse_args()
    cls, handler = {"http": (HttpServer, HttpHandler), "echo": (EchoServer, EchoHandler),
                    "record": (RecordServer, RecordHandler),
                    "stall": (StallServer, StallHandler)}[args.mode]
    server = cls((args.host, args.port), handler)
    server.proxy_protocol = args.proxy_protocol
    if args.mode == "record":
        server.record_dir = args.record_dir
    emit("LISTENING %d" % server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
