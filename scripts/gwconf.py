"""The gateway configuration the per-request measurement scripts share (proxy_ab.py,
per_request_calls.py, instructions.py): one shard, one listener, one API whose catch-all route
proxies to a backend, and the pipeline workload's features one by one on that route.

Features: "key" (an API key required; send `key_headers()`), "plan" (the key's usage plan
throttles, never refusing; implies "key"), "log" (a JSON access log line per request to a
file), "header" (the integration adds a header).
"""
import re
import socket
import subprocess
import sys
import time

KEY = "bench-0123456789abcdef0123"
FEATURES = ("key", "plan", "log", "header")


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


def wait_ready(p: int, names=()) -> None:
    """Waits until the gateway answers 200 on /small (with the features' headers)."""
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", p), timeout=1) as s:
                extra = "".join(f"{k}: {v}\r\n" for k, v in extra_headers(names)).encode()
                s.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"nothing answered on port {p}")


def requests(p: int, n: int, names=()) -> None:
    """`n` GETs of /small one at a time, round robin over 4 keep-alive connections."""
    conns = [socket.create_connection(("127.0.0.1", p)) for _ in range(4)]
    extra = "".join(f"{k}: {v}\r\n" for k, v in extra_headers(names)).encode()
    req = b"GET /small HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"
    for i in range(n):
        s = conns[i % 4]
        s.sendall(req)
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
                    break
    for s in conns:
        s.close()
