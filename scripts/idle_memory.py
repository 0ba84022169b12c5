#!/usr/bin/env python3
"""Memory per idle keep-alive connection: RSS of a gateway before and after N clients each make
one request and then stay connected, idle.

  ulimit -n 65536; python3 scripts/idle_memory.py --bin target/release/tollgate --conns 10000
  ulimit -n 65536; python3 scripts/idle_memory.py --websocket --conns 10000   # WebSocket API
  ulimit -n 65536; python3 scripts/idle_memory.py --tls --conns 5000          # HTTPS (TLS 1.3)
  ulimit -n 65536; python3 scripts/idle_memory.py --h2c --conns 5000          # HTTP/2 (h2c; pip install h2)
  ulimit -n 65536; python3 scripts/idle_memory.py --tls-stall --conns 5000    # TLS handshakes left half done

Starts the gateway (one worker) on a temporary config with a mock route (idle timeouts 600 s, so
that no connection closes while the others open: a TLS one takes ~7 ms from Python), opens the connections
from this process, waits for them to go idle, reads VmRSS from /proc, prints the difference per
connection, and stops the gateway (by its PID). Also `--bin nginx` for nginx with the same
workload (`--nginx`).
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


WEBSOCKET_API = """
[[apis]]
name = "a"
kind = "websocket"
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "$default"
  route_response = true
  integration = { type = "mock", status = 200, body = "ok" }
[[domains]]
host = "*"
mappings = [{ base_path = "", api = "a", stage = "p" }]
"""


def make_cert(tmp):
    """An ECDSA P-256 certificate for 127.0.0.1 (the clients do not verify it)."""
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    return cert, key


def start_tollgate(binary, tmp, port, websocket=False, driver="auto", tls=None, h2c=False):
    conf = os.path.join(tmp, "idle.toml")
    if websocket:
        with open(conf, "w") as f:
            f.write(f"""
[server]
workers = 1
state_dir = "{tmp}/data"
driver = "{driver}"
[limits]
idle_timeout = "600s"
header_timeout = "600s"
[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
""" + WEBSOCKET_API)
        env = dict(os.environ, TOLLGATE_LOG="warn")
        return subprocess.Popen([binary, "--config", conf], env=env, stderr=subprocess.DEVNULL)
    with open(conf, "w") as f:
        f.write(f"""
[server]
workers = 1
state_dir = "{tmp}/data"
driver = "{driver}"
[limits]
idle_timeout = "600s"
header_timeout = "600s"
[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
{f'tls = {{ cert = "{tls[0]}", key = "{tls[1]}" }}' if tls else ""}
{"h2c = true" if h2c else ""}
[[apis]]
name = "a"
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "GET /m"
  integration = {{ type = "mock", body = "ok" }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "a", stage = "p" }}]
""")
    env = dict(os.environ, TOLLGATE_LOG="warn")
    return subprocess.Popen([binary, "--config", conf], env=env, stderr=subprocess.DEVNULL)


def start_nginx(binary, tmp, port, tls=None, h2c=False):
    conf = os.path.join(tmp, "nginx.conf")
    ssl = f" ssl; ssl_protocols TLSv1.2 TLSv1.3; ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}" if tls else ""
    ssl += " http2" if h2c else ""
    with open(conf, "w") as f:
        f.write(f"""
daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log /dev/null;
events {{ worker_connections 65536; }}
http {{ access_log off; keepalive_timeout 600s; client_header_timeout 600s; keepalive_requests 100000;
  server {{ listen 127.0.0.1:{port}{ssl}; location /m {{ return 200 "ok"; }} }} }}
""")
    p = subprocess.Popen([binary, "-c", conf, "-p", tmp])
    # The worker is the process that holds the connections.
    time.sleep(0.5)
    out = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    return p, int(out[0]) if out else p.pid


def h2c_get(port):
    """An HTTP/2 connection (prior knowledge) that has made one GET and got its answer."""
    import h2.config
    import h2.connection
    import h2.events
    s = socket.create_connection(("127.0.0.1", port))
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":path", "/m"), (":scheme", "http"), (":authority", "a")],
                   end_stream=True)
    s.sendall(c.data_to_send())
    while True:
        data = s.recv(65535)
        if not data:
            sys.exit("connection closed early")
        events = c.receive_data(data)
        out = c.data_to_send()
        if out:
            s.sendall(out)
        if any(isinstance(e, h2.events.StreamEnded) for e in events):
            return s


def half_handshake(ctx, s):
    """Sends a ClientHello, reads the server's whole first flight, and stops there: the server
    holds the handshake's state until its timeout."""
    import ssl
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    t = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        t.do_handshake()
    except ssl.SSLWantReadError:
        pass
    s.sendall(out.read())
    # The flight ends with the server's Finished; the client's next step would be its own.
    while True:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed early")
        inc.write(chunk)
        try:
            t.do_handshake()
            break
        except ssl.SSLWantReadError:
            continue
    return s, t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--nginx", action="store_true", help="--bin is nginx")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds idle before measuring")
    ap.add_argument("--driver", default="auto", help="server.driver: auto, io_uring, io_uring_basic, epoll")
    ap.add_argument("--websocket", action="store_true",
                    help="open WebSocket API connections (101, then idle) instead")
    ap.add_argument("--tls", action="store_true", help="HTTPS: a TLS listener, TLS 1.3 clients")
    ap.add_argument("--h2c", action="store_true", help="HTTP/2 with prior knowledge (the h2 package)")
    ap.add_argument("--tls-stall", action="store_true",
                    help="TLS 1.3 clients that send their ClientHello, read the server's flight and "
                         "never finish the handshake (the script raises limits.header_timeout, 10 s by default, "
                         "to 600 s, so that none is cut while the others open)")
    a = ap.parse_args()
    a.tls = a.tls or a.tls_stall
    tmp = tempfile.mkdtemp(prefix="tollgate-idle-")
    port = free_port()
    tls = make_cert(tmp) if a.tls else None
    ctx = None
    if tls:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if a.nginx:
        proc, pid = start_nginx(a.bin, tmp, port, tls, a.h2c)
    else:
        proc = start_tollgate(a.bin, tmp, port, a.websocket, a.driver, tls, a.h2c)
        pid = proc.pid
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("the server did not start")
                time.sleep(0.05)
        time.sleep(0.5)
        base = rss_kib(pid)
        socks = []
        req = b"GET /m HTTP/1.1\r\nHost: a\r\n\r\n"
        done = lambda d: b"\r\n\r\n" in d and d.endswith(b"ok")
        if a.websocket:
            req = (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            done = lambda d: d.startswith(b"HTTP/1.1 101") and d.endswith(b"\r\n\r\n")
        for _ in range(a.conns):
            if a.h2c:
                socks.append(h2c_get(port))
                continue
            s = socket.create_connection(("127.0.0.1", port))
            if a.tls_stall:
                socks.append(half_handshake(ctx, s))
                continue
            if ctx:
                s = ctx.wrap_socket(s, server_hostname="localhost")
            s.sendall(req)
            data = b""
            while not done(data):
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit("connection closed early")
                data += chunk
            socks.append(s)
        time.sleep(a.settle)
        after = rss_kib(pid)
        per = (after - base) * 1024 / a.conns
        print(f"{os.path.basename(a.bin)}: RSS {base} KiB idle, {after} KiB with {a.conns} idle "
              f"{'WebSocket' if a.websocket else 'half-done TLS' if a.tls_stall else 'HTTPS keep-alive' if tls else 'HTTP/2' if a.h2c else 'keep-alive'} connections: {per:.0f} bytes per connection")
        for s in socks:
            (s[0] if isinstance(s, tuple) else s).close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
