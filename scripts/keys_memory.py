#!/usr/bin/env python3
"""Memory with many distinct API keys: imports N keys (default 100,000) into a fresh gateway
(one plan with a per-key throttle and a quota), then sends one request with each key so that
every key gets its per-key bucket and quota cell, and prints the gateway's resident memory
(VmRSS, VmHWM) at each step. Bounded: N requests on one keep-alive connection to 127.0.0.1.

    cargo build --release && python3 scripts/keys_memory.py [N]
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":")
            out[k] = int(v.split()[0]) / 1024
    return out


def request(sock, raw):
    sock.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    n = 0
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    while len(rest) < n:
        rest += sock.recv(65536)
    return int(head.split(b" ")[1]), rest[:n]


def main():
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as td:
        conf = Path(td) / "config.toml"
        conf.write_text(f"""
[server]
workers = 1
[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
[admin]
addr = "127.0.0.1:{admin}"
[[apis]]
name = "shop"
  [[apis.stages]]
  name = "prod"
  [[apis.routes]]
  route = "GET /keyed"
  api_key_required = true
  integration = {{ type = "mock", body = "ok" }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "shop", stage = "prod" }}]
[[usage_plans]]
name = "gold"
stages = ["shop/prod"]
throttle = {{ rate = 100, burst = 200 }}
quota = {{ limit = 1000000, period = "month" }}
""")
        env = dict(os.environ, TOLLGATE_ADMIN_TOKEN="t", TOLLGATE_LOG="warn")
        p = subprocess.Popen([str(ROOT / "target/release/tollgate"), "--config", str(conf)], env=env)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", admin), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            print(f"started:            {rss(p.pid)}")
            keys = [f"memtest-key-{i:08d}-padding-xx" for i in range(N)]
            csv = "Name,Key,Description,Enabled,UsagePlanIds\n" + "".join(f"k{i},{k},,true,gold\n" for i, k in enumerate(keys))
            body = csv.encode()
            a = socket.create_connection(("127.0.0.1", admin))
            t0 = time.time()
            status, resp = request(a, b"POST /apikeys/import HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            print(f"imported {N} keys:  {rss(p.pid)}  ({status}, {time.time() - t0:.1f} s)")
            c = socket.create_connection(("127.0.0.1", port))
            t0 = time.time()
            bad = 0
            for k in keys:
                st, _ = request(c, b"GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: " + k.encode() + b"\r\n\r\n")
                bad += st != 200
            print(f"{N} keys used once: {rss(p.pid)}  ({time.time() - t0:.1f} s, {bad} not 200)")
        finally:
            p.terminate()
            p.wait(timeout=30)


if __name__ == "__main__":
    main()
