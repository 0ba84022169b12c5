#!/usr/bin/env python3
"""Same-run A/B of Tollgate builds on the paths where a client's receive size matters, beside
the small-request paths that `proxy_ab.py` covers: big WebSocket API messages, a relayed
(proxied) WebSocket upgrade, and HTTP/2 cleartext uploads. Each gateway is one worker pinned to
CPU 1; clients and backends run on CPU 0. Rounds alternate between the builds; prints the
median CPU µs per message (all the gateway's threads, from schedstat) and its ratio to the
first build, and every round.

  python3 scripts/stream_ab.py '[{"name":"old","bin":"/tmp/old"},{"name":"new","bin":"target/release/tollgate"}]' \
      --mode ws --size 32768 --rounds 5 --seconds 3

Modes:
  ws     a WebSocket API whose `$default` route answers with a mock (two-way): each of
         --conns connections sends a binary message of --size bytes (one frame, masked),
         waits for the answer, and sends the next.
  relay  an HTTP API route whose upstream answers the upgrade with 101 and then echoes what
         it gets: each connection sends --size bytes and reads them back, in a loop.
  h2c    HTTP/2 cleartext (prior knowledge) POSTs of --size bytes through the gateway to an
         nginx that answers 200 (h2load: --conns connections, 4 streams each).

Stops what it started by PID; ends by itself.
"""
import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwconf  # noqa: E402


def cpu_us(pid: int) -> float:
    tot = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                tot += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return tot / 1e3


def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on port {port}")


def gateway_toml(tmp: str, i: int, port: int, be: int, mode: str, size: int = 32768) -> str:
    frame = max(size + 16, 32 << 10)
    head = f"""[server]
workers = 1
state_dir = "{tmp}/data{i}"
[limits]
max_body = "16MiB"
websocket_frame = {frame}
websocket_message = {max(frame, 128 << 10)}
[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
h2c = {"true" if mode == "h2c" else "false"}
"""
    if mode == "ws":
        return head + """
[[apis]]
name = "ws"
kind = "websocket"
route_selection_expression = "$request.body.action"
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "$default"
  route_response = true
  integration = { type = "mock", status = 200, body = '{"message":"ok"}' }

[[domains]]
host = "*"
mappings = [{ base_path = "", api = "ws", stage = "p" }]
"""
    return head + f"""
[[upstreams]]
name = "be"
targets = ["127.0.0.1:{be}"]

[[apis]]
name = "a"
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "ANY /{{proxy+}}"
  integration = {{ type = "http", uri = "http://be/{{proxy}}" }}

[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "a", stage = "p" }}]
"""


# --- the relay's backend: 101, then an echo -------------------------------------------------

async def echo_backend(port_box: list, ready: threading.Event, stop: threading.Event):
    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter):
        try:
            await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
            while True:
                b = await r.read(262144)
                if not b:
                    break
                w.write(b)
                await w.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port_box.append(srv.sockets[0].getsockname()[1])
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.2)
    srv.close()


def start_echo() -> tuple:
    box, ready, stop = [], threading.Event(), threading.Event()
    t = threading.Thread(target=lambda: asyncio.run(echo_backend(box, ready, stop)), daemon=True)
    t.start()
    ready.wait(10)
    return box[0], stop


# --- clients ---------------------------------------------------------------------------------

UPGRADE = (b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def ws_frame(size: int) -> bytes:
    """A client's binary frame of `size` bytes, masked (the masked payload computed once)."""
    key = bytes([0x37, 0xfa, 0x21, 0x3d])
    payload = bytes((i * 7) & 0xFF for i in range(size))
    masked = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    if size < 126:
        head = bytes([0x82, 0x80 | size])
    elif size < 65536:
        head = bytes([0x82, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big")
    return head + key + masked


async def read_ws_message(r: asyncio.StreamReader) -> bytes:
    h = await r.readexactly(2)
    n = h[1] & 0x7F
    if n == 126:
        n = int.from_bytes(await r.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await r.readexactly(8), "big")
    body = await r.readexactly(n)
    if h[0] & 0x0F == 8:
        raise RuntimeError(f"the gateway closed the WebSocket: {body[:2].hex()} {body[2:]!r}")
    return body


async def client_loop(mode: str, port: int, size: int, deadline: float, counts: list):
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    w.write(UPGRADE if mode == "ws" else UPGRADE.replace(b"GET / ", b"GET /chat ", 1))
    head = await r.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"no upgrade: {head[:200]!r}")
    frame = ws_frame(size) if mode == "ws" else bytes((i * 7) & 0xFF for i in range(size))
    n = 0
    while time.monotonic() < deadline:
        w.write(frame)
        if mode == "ws":
            answer = await read_ws_message(r)
            if answer != b'{"message":"ok"}':
                raise RuntimeError(f"unexpected answer: {answer[:200]!r}")
        else:
            await r.readexactly(size)
        n += 1
    counts.append(n)
    w.close()


def run_clients(mode: str, port: int, size: int, conns: int, secs: float) -> int:
    counts: list = []

    async def main():
        deadline = time.monotonic() + secs
        await asyncio.gather(*(client_loop(mode, port, size, deadline, counts) for _ in range(conns)))

    asyncio.run(main())
    return sum(counts)


def run_h2load(port: int, data: str, conns: int, secs: float) -> int:
    out = subprocess.run(["taskset", "-c", "0", "h2load", "-c", str(conns), "-m", "4", "-D", str(int(secs)),
                          "-d", data, f"http://127.0.0.1:{port}/post"],
                         capture_output=True, text=True, timeout=secs + 60).stdout
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not m or "h2c" not in out or int(m.group(2)) != int(m.group(1)):
        raise RuntimeError(f"h2load: not every upload succeeded over h2c:\n{out}")
    return int(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", help='JSON: [{"name":..,"bin":..,"env":{..}}, ...]')
    ap.add_argument("--mode", choices=("ws", "relay", "h2c"), default="ws")
    ap.add_argument("--size", type=int, default=32768)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    a = ap.parse_args()
    variants = json.loads(a.variants)
    # Clients and backends (started from here, or threads of this process) on CPU 0.
    os.sched_setaffinity(0, {0})
    tmp = tempfile.mkdtemp()
    procs = []
    stop_echo = None
    try:
        be = 0
        if a.mode == "relay":
            be, stop_echo = start_echo()
        elif a.mode == "h2c":
            be, p = gwconf.backend(tmp)
            procs.append(p)
            data = f"{tmp}/body"
            open(data, "wb").write(os.urandom(a.size))
        for i, v in enumerate(variants):
            v["port"] = gwconf.free_port()
            open(f"{tmp}/tg{i}.toml", "w").write(gateway_toml(tmp, i, v["port"], be, a.mode, a.size))
            env = dict(os.environ, TOLLGATE_LOG="warn", **v.get("env", {}))
            p = subprocess.Popen(["taskset", "-c", "1", v["bin"], "--config", f"{tmp}/tg{i}.toml"],
                                 env=env, stderr=subprocess.DEVNULL)
            procs.append(p)
            v["proc"], v["res"] = p, []
        for v in variants:
            wait_port(v["port"])

        def one(v, secs):
            if a.mode == "h2c":
                return run_h2load(v["port"], data, a.conns, secs)
            return run_clients(a.mode, v["port"], a.size, a.conns, secs)

        for v in variants:  # warm up, and check that each answers
            one(v, 1)
            if v["proc"].poll() is not None:
                sys.exit(f"{v['name']}: the gateway exited")
        for _ in range(a.rounds):
            for v in variants:
                c0 = cpu_us(v["proc"].pid)
                n = one(v, a.seconds)
                c1 = cpu_us(v["proc"].pid)
                v["res"].append(((c1 - c0) / max(n, 1), n / a.seconds))
        base = statistics.median(x for x, _ in variants[0]["res"])
        print(f"mode {a.mode}, {a.size} bytes, {a.conns} connections, {a.rounds} rounds of {a.seconds} s")
        for v in variants:
            m = statistics.median(x for x, _ in v["res"])
            rate = statistics.median(r for _, r in v["res"])
            print(f"{v['name']:>10}: {m:8.2f} us/msg  ratio {m / base:.3f}  {rate:9.0f} msg/s  "
                  f"rounds {' '.join(f'{x:.1f}' for x, _ in v['res'])}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if stop_echo:
            stop_echo.set()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
