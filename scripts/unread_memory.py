#!/usr/bin/env python3
"""Memory a gateway holds for clients that send and never read: N connections (each with a
4 KiB receive buffer) send pipelined GETs of a small mock route for SECONDS and read nothing
(`--websocket`: open a WebSocket connection each, then send `{}` messages, each answered by a
two-way mock route); prints the gateway's RSS growth over idle, per connection. Run it once
per driver to compare:

  python3 scripts/unread_memory.py [--bin target/release/tollgate] [--driver io_uring|epoll|io_uring_basic]
                                   [--conns 100] [--seconds 6] [--websocket]

The gateway runs with MIMALLOC_PURGE_DELAY=0 (freed pages go back at once, so RSS is what is
held); it listens on 127.0.0.1 only and is stopped by its PID at the end (and by `timeout`).
"""
import argparse
import base64
import os
import socket
import subprocess
import tempfile
import time

from gwconf import free_port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def handshake(s):
    """Opens a WebSocket connection on `s` (the API's stage at the base path)."""
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET /prod HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        if not b:
            raise SystemExit("the gateway closed the handshake")
        head += b
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise SystemExit(f"no upgrade: {head[:80]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--driver", default="io_uring")
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--websocket", action="store_true")
    a = ap.parse_args()
    port = free_port()
    d = tempfile.mkdtemp(prefix="unread")
    cfg = os.path.join(d, "config.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
workers = 1
driver = "{a.driver}"
state_dir = "{d}/state"

[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"

[[apis]]
name = "a"
{'kind = "websocket"' if a.websocket else ''}

  [[apis.stages]]
  name = "prod"

  [[apis.routes]]
  {'route = "$default"' if a.websocket else 'route = "GET /m"'}
  {'route_response = true' if a.websocket else ''}
  integration = {{ type = "mock", body = "{'x' * 200}" }}

[[domains]]
host = "*"
mappings = [{{ api = "a", stage = "prod" }}]
""")
    env = dict(os.environ, MIMALLOC_PURGE_DELAY="0")
    timeout = str(int(a.seconds) + 60)
    p = subprocess.Popen([a.bin, "--config", cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    socks = []
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if p.poll() is not None:
                    raise SystemExit("the gateway exited")
                time.sleep(0.05)
        for _ in range(a.conns):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            if a.websocket:
                handshake(s)
            s.setblocking(False)
            socks.append(s)
        idle = rss_kib(p.pid)
        if a.websocket:
            # Masked (all-zero mask) text frames of `{}`.
            req = (bytes([0x81, 0x82]) + b"\0\0\0\0" + b"{}") * 500
        else:
            req = b"GET /m HTTP/1.1\r\nHost: a\r\n\r\n" * 500
        t0 = time.time()
        while time.time() - t0 < a.seconds:
            for s in socks:
                try:
                    s.send(req)
                except OSError:
                    pass
            time.sleep(0.02)
        grown = rss_kib(p.pid) - idle
        print(f"{a.driver}{' (WebSocket)' if a.websocket else ''}: +{grown} KiB over idle with {a.conns} connections that never read, "
              f"{grown / a.conns:.0f} KiB per connection")
    finally:
        for s in socks:
            s.close()
        p.kill()
        p.wait(timeout=int(timeout))


if __name__ == "__main__":
    main()
