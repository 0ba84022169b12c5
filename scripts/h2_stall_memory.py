#!/usr/bin/env python3
"""Memory a stalled HTTP/2 stream makes the gateway hold: one h2c connection whose client
opens no flow-control window (SETTINGS_INITIAL_WINDOW_SIZE = 0) asks for N big answers at
once and reads none of them; the gateway's RSS before and after, per stream. With `--open`
the client opens the largest windows instead (stream and connection, 2^31-1) and still
reads nothing, from a socket with a 4 KiB receive buffer: what the gateway then holds is
what HTTP/2 lets it queue per stream.

  python3 scripts/h2_stall_memory.py [--bin target/release/tollgate] [--streams 100] [--mib 4] [--open]

The backend (here, in Python) sends each answer whole at once; what the gateway does not take
waits in the kernel's socket buffers, which are not the gateway's RSS. Only 127.0.0.1.
"""
import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwconf  # noqa: E402


def backend(port: int, size: int, stop: threading.Event) -> None:
    """Answers every request on a connection with `size` bytes, then holds it open."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1024)
    srv.settimeout(0.2)
    body = b"x" * size
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size

    def serve(c: socket.socket) -> None:
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            c.sendall(head + body)
            while not stop.is_set():
                time.sleep(0.1)
        except OSError:
            pass
        finally:
            c.close()

    while not stop.is_set():
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    srv.close()


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload


def literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman coding."""
    def string(s: bytes) -> bytes:
        assert len(s) < 127
        return bytes([len(s)]) + s
    return b"\x00" + string(name) + string(value)


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--mib", type=int, default=4)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--open", action="store_true", help="open the windows wide, still read nothing")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tollgate-h2stall-")
    be = gwconf.free_port()
    stop = threading.Event()
    threading.Thread(target=backend, args=(be, a.mib << 20, stop), daemon=True).start()
    port = gwconf.free_port()
    with open(f"{tmp}/g.toml", "w") as f:
        f.write(f"""[server]
workers = 1
state_dir = "{tmp}/state"
[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
h2c = true
[[upstreams]]
name = "be"
targets = ["127.0.0.1:{be}"]
[[apis]]
name = "api"
  [[apis.stages]]
  name = "prod"
  [[apis.routes]]
  route = "GET /big"
  integration = {{ type = "http", uri = "http://be/big" }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "api", stage = "prod" }}]
""")
    g = subprocess.Popen([a.bin, "--config", f"{tmp}/g.toml"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("the gateway did not start")
                time.sleep(0.05)
        time.sleep(0.5)
        before = rss_kib(g.pid)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        if a.open:
            big = (1 << 31) - 1
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, struct.pack(">HI", 4, big))
                      + frame(8, 0, 0, struct.pack(">I", big - 65535)))
        else:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, struct.pack(">HI", 4, 0)))
        block = b"".join(literal(n, v) for n, v in [
            (b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/big"), (b":authority", b"h")])
        for i in range(a.streams):
            s.sendall(frame(1, 0x5, 1 + 2 * i, block))
        time.sleep(a.settle)
        after = rss_kib(g.pid)
        print(f"{a.streams} stalled streams of {a.mib} MiB answers{' (windows open)' if a.open else ''}: RSS {before} -> {after} KiB, "
              f"{(after - before) / a.streams:.0f} KiB per stream")
        s.close()
    finally:
        g.terminate()
        g.wait()
        stop.set()


if __name__ == "__main__":
    main()
