#!/usr/bin/env python3
"""Allocations, clock reads and memory copies per proxied request, counted exactly with uprobes
(perf probe; needs root and a kernel with uprobe events): a gateway build in front of an nginx
backend, N requests one at a time over 4 keep-alive connections, `perf stat` on the probes.

  python3 scripts/per_request_calls.py target/release/tollgate [/tmp/other-build ...] [--requests 2000]

Counts `mi_malloc_aligned` in the binary (every Rust allocation goes through it with the
mimalloc allocator) and `clock_gettime` / `__memmove_avx_unaligned_erms` in libc. One request at
a time means one runtime turn per request: per-turn work (a clock read, the completion buffer)
is counted once per request here, where a loaded shard shares it among many. Removes the probes
it added and stops the processes it started (by PID).
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_ready(p: int) -> None:
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", p), timeout=1) as s:
                s.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"nothing answered on port {p}")


def requests(p: int, n: int) -> None:
    conns = [socket.create_connection(("127.0.0.1", p)) for _ in range(4)]
    req = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n"
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
                m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
    for s in conns:
        s.close()


def probe(args: list[str]) -> None:
    subprocess.run(["perf", "probe", "-q"] + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--requests", type=int, default=2000)
    a = ap.parse_args()
    if shutil.which("perf") is None:
        sys.exit("perf is needed (apt-get install linux-perf)")
    tmp = tempfile.mkdtemp()
    procs = []
    added = []
    try:
        be = port()
        open(f"{tmp}/be.conf", "w").write(
            f"daemon off; master_process off; worker_processes 1; error_log stderr error; pid {tmp}/b.pid;\n"
            "events { worker_connections 1024; }\n"
            "http { access_log off; keepalive_requests 10000000;\n"
            f"  server {{ listen 127.0.0.1:{be}; location / {{ return 200 \"hello, world\\n\"; }} }} }}\n")
        procs.append(subprocess.Popen(["nginx", "-c", f"{tmp}/be.conf", "-p", tmp], stderr=subprocess.DEVNULL))
        # Left over by an interrupted run.
        subprocess.run(["perf", "probe", "-q", "-d", "tgcount:*"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe(["-x", LIBC, "--add", "tgcount:clock=clock_gettime"])
        added.append("tgcount:clock")
        probe(["-x", LIBC, "--add", "tgcount:memmove=__memmove_avx_unaligned_erms"])
        added.append("tgcount:memmove")
        for i, b in enumerate(a.bins):
            ev = f"tg_malloc{i}"
            probe(["-x", os.path.abspath(b), "--add", f"tgcount:{ev}=mi_malloc_aligned"])
            added.append(f"tgcount:{ev}")
            p = port()
            open(f"{tmp}/tg{i}.toml", "w").write(f"""[server]
workers = 1
state_dir = "{tmp}/data{i}"
[[listeners]]
name = "http"
addr = "127.0.0.1:{p}"
[[apis]]
name = "a"
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "ANY /{{proxy+}}"
  integration = {{ type = "http", uri = "http://127.0.0.1:{be}/{{proxy}}" }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "a", stage = "p" }}]
""")
            env = dict(os.environ, TOLLGATE_LOG="warn")
            g = subprocess.Popen([b, "--config", f"{tmp}/tg{i}.toml"], env=env, stderr=subprocess.DEVNULL)
            procs.append(g)
            wait_ready(p)
            requests(p, 200)  # warm: pools, caches
            out = f"{tmp}/stat{i}.txt"
            st = subprocess.Popen(["perf", "stat", "-x", ",", "-o", out, "-e",
                                   f"{added[-1]},tgcount:clock,tgcount:memmove", "-p", str(g.pid)])
            time.sleep(0.5)
            requests(p, a.requests)
            st.send_signal(2)
            st.wait()
            counts = {}
            for line in open(out):
                f = line.split(",")
                if len(f) > 2 and f[0].strip().isdigit():
                    counts[f[2].split(":")[-1]] = int(f[0])
            print(f"{b}: per request  allocations {counts.get(ev, 0) / a.requests:.2f}  "
                  f"clock reads {counts.get('clock', 0) / a.requests:.2f}  "
                  f"memmove calls {counts.get('memmove', 0) / a.requests:.2f}")
            g.terminate()
            g.wait()
            procs.remove(g)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        for e in added:
            subprocess.run(["perf", "probe", "-q", "-d", e], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
