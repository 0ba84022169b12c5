#!/usr/bin/env python3
"""A Redis that hangs (SIGSTOP) under a fleet-wide limit: what clients see.

  python3 scripts/redis_pause.py --bin target/release/tollgate [--seconds 10]

Starts redis-server and one gateway (one worker, [cluster] nodes = 2, on_redis_error = local,
timeout 250ms, a gateway-wide limit of 200 req/s so the node's share is 100 req/s), warms up,
pauses Redis with SIGSTOP, lets a second pass, runs wrk (16 connections) for --seconds, resumes
Redis, and prints
the admitted (200) rate and wrk's latency percentiles. Ends the processes it started by PID.
"""
import argparse
import os
import re
import signal
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


def wait_port(port):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--no-pause", action="store_true", help="the same run with Redis answering")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tollgate-redis-pause-")
    rport, gport = free_port(), free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    gw = None
    try:
        wait_port(rport)
        conf = os.path.join(tmp, "c.toml")
        with open(conf, "w") as f:
            f.write(f"""
[server]
workers = 1
state_dir = "{tmp}/data"
[[listeners]]
name = "http"
addr = "127.0.0.1:{gport}"
[throttle]
rate = 200
burst = 200
[cluster]
redis = "redis://127.0.0.1:{rport}"
nodes = 2
timeout = "250ms"
on_redis_error = "local"
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
        gw = subprocess.Popen([a.bin, "--config", conf], env=dict(os.environ, TOLLGATE_LOG="warn"),
                              stderr=subprocess.DEVNULL)
        wait_port(gport)
        subprocess.run(["wrk", "-t1", "-c4", "-d2s", f"http://127.0.0.1:{gport}/m"],
                       capture_output=True)
        if not a.no_pause:
            os.kill(redis.pid, signal.SIGSTOP)
            # The steady state: let the requests in flight at the pause finish first.
            subprocess.run(["wrk", "-t1", "-c4", "-d1s", f"http://127.0.0.1:{gport}/m"],
                           capture_output=True)
        out = subprocess.run(["wrk", "-t1", "-c16", f"-d{a.seconds}s", "--latency",
                              f"http://127.0.0.1:{gport}/m"], capture_output=True, text=True).stdout
        os.kill(redis.pid, signal.SIGCONT)
        total = int(re.search(r"(\d+) requests in", out).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        refused = int(non2xx.group(1)) if non2xx else 0
        lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
        state = "answering" if a.no_pause else "paused"
        print(f"{os.path.basename(a.bin)}: Redis {state} {a.seconds}s: admitted "
              f"{(total - refused) / a.seconds:.0f} req/s (node share 100/s), refused "
              f"{refused / a.seconds:.0f} req/s; latency p50 {lat.get('50')} p90 {lat.get('90')} p99 {lat.get('99')}")
    finally:
        if gw:
            gw.terminate()
            gw.wait(timeout=40)
        os.kill(redis.pid, signal.SIGCONT)
        redis.terminate()
        redis.wait(timeout=10)


if __name__ == "__main__":
    main()
