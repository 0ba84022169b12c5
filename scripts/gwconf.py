"""The gateway configuration the per-request measurement scripts share (proxy_ab.py,
per_request_calls.py, instructions.py): one shard, one listener, one API whose catch-all route
proxies to a backend, and the pipeline workload's features one by one on that route.

Features: "key" (an API key required; send `key_headers()`), "plan" (the key's usage plan
throttles, never refusing; implies "key"), "log" (a JSON access log line per request to a
file), "clog" (the line in nginx's `combined` fields instead, as the benchmark's pipeline
workload writes it), "header" (the integration adds a header), "tls" (the listener speaks TLS 1.3; clients
connect with ALPN http/1.1), "h2" (HTTP/2 over TLS, ALPN h2, one stream at a time per
connection; implies "tls"), "close" (plain HTTP/1.1, a new connection per request: the request
says `Connection: close` and the client reads the answer to the gateway's close, so the
accept, the connection's state and its close count as the request's work).
"""
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import time

KEY = "bench-0123456789abcdef0123"
FEATURES = ("key", "plan", "log", "clog", "header", "tls", "h2", "close")
# nginx's `combined` line in access-log variables (as `scripts/bench.py` writes it).
COMBINED = ('$context.identity.sourceIp - - [$context.requestTime] '
            '"$context.httpMethod $context.requestUri $context.protocol" $context.status '
            '$context.responseLength "-" "$context.identity.userAgent"')


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def backend(tmp: str):
    """An nginx that answers every GET with 200 `hello, world` (13 bytes): (port, process)."""
    be = free_port()
    open(f"{tmp}/be.conf", "w").write(
        f"daemon off; master_process off; worker_processes 1; error_log stderr error; pid {tmp}/b.pid;\n"
        "events { worker_connections 1024; }\n"
        "http { access_log off; keepalive_requests 10000000;\n"
        f"  server {{ listen 127.0.0.1:{be}; location / {{ return 200 \"hello, world\\n\"; }} }} }}\n")
    return be, subprocess.Popen(["nginx", "-c", f"{tmp}/be.conf", "-p", tmp], stderr=subprocess.DEVNULL)


def features(names) -> set:
    f = set(names or [])
    bad = f - set(FEATURES)
    if bad:
        raise SystemExit(f"unknown feature(s) {sorted(bad)}; allowed: {', '.join(FEATURES)}")
    if "plan" in f:
        f.add("key")
    if "h2" in f:
        f.add("tls")
    if "close" in f and "tls" in f:
        raise SystemExit('feature "close" is plain HTTP/1.1: it does not go with "tls" or "h2"')
    return f


def extra_headers(names) -> list:
    """The (name, value) headers a client sends for these features."""
    return [("x-api-key", KEY)] if "key" in features(names) else []


def key_headers(names) -> list:
    """The client's extra header arguments (wrk `-H`) for these features."""
    return [a for k, v in extra_headers(names) for a in ("-H", f"{k}: {v}")]


def gateway_toml(tmp: str, i: int, port: int, backend: int, driver: str = "io_uring", names=()) -> str:
    f = features(names)
    route_extra = "api_key_required = true\n  " if "key" in f else ""
    headers = ', headers = { "x-gateway" = "tollgate" }' if "header" in f else ""
    stage_extra = f'access_log = {{ path = "{tmp}/access{i}.log", format = "json" }}' if "log" in f else ""
    if "clog" in f:
        stage_extra = f"access_log = {{ path = \"{tmp}/access{i}.log\", format = '{COMBINED}' }}"
    tls = ""
    if "tls" in f:
        cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
        if not os.path.exists(cert):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                           check=True, capture_output=True)
        tls = f'tls = {{ cert = "{cert}", key = "{key}" }}'
    plan = ""
    if "key" in f:
        plan = f"""
[[usage_plans]]
name = "bench"
stages = ["a/p"]
{'throttle = { rate = 1000000000, burst = 1000000000 }' if 'plan' in f else ''}

[[api_keys]]
name = "bench"
value = "{KEY}"
plan = "bench"
"""
    return f"""[server]
workers = 1
state_dir = "{tmp}/data{i}"
driver = "{driver}"
[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
{tls}
[[apis]]
name = "a"
  [[apis.stages]]
  name = "p"
  {stage_extra}
  [[apis.routes]]
  route = "ANY /{{proxy+}}"
  {route_extra}integration = {{ type = "http", uri = "http://127.0.0.1:{backend}/{{proxy}}"{headers} }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "a", stage = "p" }}]
{plan}
"""


def connect(p: int, names=(), timeout=None) -> socket.socket:
    """A client connection to the gateway: plain, or TLS with ALPN http/1.1 or h2 (the preface
    and an empty SETTINGS sent)."""
    f = features(names)
    s = socket.create_connection(("127.0.0.1", p), timeout=timeout)
    if "tls" not in f:
        return s
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.set_alpn_protocols(["h2" if "h2" in f else "http/1.1"])
    s = c.wrap_socket(s, server_hostname="localhost")
    if "h2" in f:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b""))
    return s


def h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_request(stream: int, names=()) -> bytes:
    """A HEADERS frame (END_STREAM, END_HEADERS) for GET /small: HPACK literals, not indexed."""
    def lit(n: bytes, v: bytes) -> bytes:
        return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v
    block = b"\x82\x87" + lit(b":authority", b"x") + lit(b":path", b"/small")
    for k, v in extra_headers(names):
        block += lit(k.encode(), v.encode())
    return h2_frame(1, 0x5, stream, block)


class H2Reader:
    """Reads frames until a stream ends; answers SETTINGS and PING, checks the status."""

    def __init__(self, s: socket.socket):
        self.s, self.buf, self.data = s, b"", 0

    def frame(self):
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            chunk = self.s.recv(65536)
            if not chunk:
                sys.exit("the gateway closed a connection")
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        kind, flags = self.buf[3], self.buf[4]
        stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
        return kind, flags, stream, payload

    def until_end(self, stream: int) -> bool:
        ok = False
        while True:
            kind, flags, sid, payload = self.frame()
            if kind == 4 and not flags & 1:
                self.s.sendall(h2_frame(4, 1, 0, b""))
            elif kind == 6 and not flags & 1:
                self.s.sendall(h2_frame(6, 1, 0, payload))
            elif kind == 7 or (kind == 3 and sid == stream):
                sys.exit("the gateway reset the stream or the connection")
            elif kind == 0:
                self.data += len(payload)
            elif kind == 1 and sid == stream:
                # :status 200 is HPACK's static index 8.
                ok = payload[:1] == b"\x88"
            if sid == stream and kind in (0, 1) and flags & 1:
                return ok


def h2_get(s: socket.socket, reader: "H2Reader", stream: int, names=()) -> bool:
    s.sendall(h2_request(stream, names))
    ok = reader.until_end(stream)
    # Give the answer's bytes back to the connection's window, so long runs never stall (the
    # stream is over: its own window needs nothing).
    if reader.data:
        s.sendall(h2_frame(8, 0, 0, struct.pack(">I", reader.data)))
        reader.data = 0
    return ok


def wait_ready(p: int, names=()) -> None:
    """Waits until the gateway answers 200 on /small (with the features' headers)."""
    for _ in range(200):
        try:
            with connect(p, names, timeout=1) as s:
                if "h2" in features(names):
                    if h2_get(s, H2Reader(s), 1, names):
                        return
                    continue
                extra = "".join(f"{k}: {v}\r\n" for k, v in extra_headers(names)).encode()
                s.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"nothing answered on port {p}")


def requests(p: int, n: int, names=()) -> None:
    """`n` GETs of /small one at a time, round robin over 4 keep-alive connections (over
    HTTP/2, one stream after another on each). Over TLS the connections are kept for the next
    call, so that handshakes do not count as requests' work."""
    if "tls" in features(names):
        key = (p, tuple(sorted(features(names))))
        if key not in _KEPT:
            conns = [connect(p, names) for _ in range(4)]
            _KEPT[key] = (conns, [H2Reader(s) for s in conns], [0])
        conns, readers, sent = _KEPT[key]
        for _ in range(n):
            k = sent[0] % 4
            if "h2" in features(names):
                # Stream ids go up by two per request on each connection.
                if not h2_get(conns[k], readers[k], 1 + 2 * (sent[0] // 4), names):
                    sys.exit("the gateway answered a stream with a status other than 200")
            else:
                h1_get(conns[k], names)
            sent[0] += 1
        return
    if "close" in features(names):
        for _ in range(n):
            h1_close(p, names)
        return
    conns = [connect(p, names) for _ in range(4)]
    for i in range(n):
        h1_get(conns[i % 4], names)
    for s in conns:
        s.close()


# TLS connections kept between calls of `requests`: (port, features) -> (sockets, readers, count).
_KEPT: dict = {}


def h1_close(p: int, names=()) -> None:
    """One GET /small on a new connection with `Connection: close`, read to the gateway's close."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in extra_headers(names)).encode()
    with socket.create_connection(("127.0.0.1", p)) as s:
        s.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n")
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    if not buf.startswith(b"HTTP/1.1 200"):
        sys.exit(f"the gateway answered {buf[:40]!r}, not 200")


def h1_get(s: socket.socket, names=()) -> None:
    """One GET /small on a keep-alive connection, read to the end of its answer."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in extra_headers(names)).encode()
    s.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("the gateway closed a connection")
        buf += chunk
        head, sep, body = buf.partition(b"\r\n\r\n")
        if sep:
            if not head.startswith(b"HTTP/1.1 200"):
                sys.exit(f"the gateway answered {head[:40]!r}, not 200")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if m and len(body) >= int(m.group(1)):
                return
