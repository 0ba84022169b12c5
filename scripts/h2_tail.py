#!/usr/bin/env python3
"""Tail latency of proxied HTTP/2 streams at high concurrency: h2load -c10 -m100 (1,000
concurrent streams) through a Tollgate h2c listener (one worker) to an nginx backend with
keep-alive, as the edge-hardening issue measured it.

  python3 scripts/h2_tail.py --bin target/release/tollgate [--streams 100] [--seconds 10]

Prints p50/p99/p99.9/max of the per-request latencies h2load logs, the share over 1 s, and
req/s. Pins the gateway to CPU 1 and h2load and nginx to CPU 0 (on a 2-CPU machine). Stops
what it started by PID.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, deadline=10):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--extra", default="", help="TOML lines added to the upstream table")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tollgate-h2tail-")
    bport, gport = free_port(), free_port()
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(f"""daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log /dev/null;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{bport}; location / {{ return 200 "hello, world\\n"; }} }} }}
""")
    with open(f"{tmp}/gw.toml", "w") as f:
        f.write(f"""
[server]
workers = 1
state_dir = "{tmp}/data"
[[listeners]]
name = "h2c"
addr = "127.0.0.1:{gport}"
h2c = true
[[upstreams]]
name = "b"
targets = ["127.0.0.1:{bport}"]
{a.extra}
[[apis]]
name = "a"
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "GET /{{proxy+}}"
  integration = {{ type = "http", uri = "http://b/{{proxy}}" }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "a", stage = "p" }}]
""")
    cpus = os.cpu_count() or 1
    pin_gw = ["taskset", "-c", "1"] if cpus >= 2 else []
    pin_load = ["taskset", "-c", "0"] if cpus >= 2 else []
    nginx = subprocess.Popen(pin_load + ["nginx", "-c", f"{tmp}/nginx.conf", "-p", tmp])
    gw = subprocess.Popen(pin_gw + [a.bin, "--config", f"{tmp}/gw.toml"],
                          env=dict(os.environ, TOLLGATE_LOG="warn"), stderr=subprocess.DEVNULL)
    try:
        wait_port(bport)
        wait_port(gport)
        log = f"{tmp}/h2load.log"
        out = subprocess.run(
            pin_load + ["h2load", "-c", str(a.clients), "-m", str(a.streams), "-D", str(a.seconds),
                        "--log-file", log, f"http://127.0.0.1:{gport}/x"],
            capture_output=True, text=True, timeout=a.seconds + 60).stdout
        lat = []
        with open(log) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    lat.append(int(parts[2]))  # microseconds
        lat.sort()
        if not lat:
            sys.exit("no requests logged:\n" + out)
        q = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] / 1000
        rps = next((l for l in out.splitlines() if l.startswith("finished in")), "")
        status = next((l for l in out.splitlines() if l.startswith("status codes")), "")
        over = sum(1 for x in lat if x > 1_000_000) / len(lat) * 100
        print(f"{len(lat)} requests, -c{a.clients} -m{a.streams}: p50 {q(0.5):.1f} ms, "
              f"p99 {q(0.99):.1f} ms, p99.9 {q(0.999):.1f} ms, max {lat[-1] / 1000:.1f} ms, "
              f"{over:.2f} % over 1 s")
        print(rps)
        print(status)
    finally:
        for p in (gw, nginx):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
