#!/usr/bin/env python3
"""How fast a run-time change reaches a fleet: a redis-server and three Tollgate nodes
(`[cluster]`), N API keys created one after another through node A's admin API; for each, the
time from A's answer until nodes B and C admit a request with the key (polled as fast as
one client can). Prints p50 / p99 / max per node.

  python3 scripts/fleet_latency.py --bin target/release/tollgate --changes 1000

With --catch-up N: N keys are imported on A first (CSV, 5,000 per call), and a fourth node
started afterwards is timed from its start until it admits the last of them (a node that
never synced reads the fleet's objects whole), with its RSS then.

Needs redis-server (apt). Stops what it started by PID; ends by itself.
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

TOKEN = "fleet-latency-token"


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
    sys.exit(f"nothing listens on {port}")


def node_conf(tmp, i, port, admin, redis):
    path = os.path.join(tmp, f"node{i}.toml")
    with open(path, "w") as f:
        f.write(f"""
[server]
workers = 1
state_dir = "{tmp}/state{i}"
[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
[admin]
addr = "127.0.0.1:{admin}"
token_env = "FLEET_TOKEN"
[cluster]
redis = "redis://127.0.0.1:{redis}"
nodes = 3
[[usage_plans]]
name = "gold"
stages = ["shop/prod"]
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
""")
    return path


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--catch-up", type=int, default=0)
    a = ap.parse_args()
    if not shutil.which("redis-server"):
        sys.exit("redis-server is missing (apt-get install redis-server)")
    tmp = tempfile.mkdtemp(prefix="tollgate-fleet-")
    procs = []
    try:
        rport = free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(rport)
        nodes = []
        env = dict(os.environ, TOLLGATE_LOG="warn", FLEET_TOKEN=TOKEN)
        for i in range(3):
            port, admin = free_port(), free_port()
            procs.append(subprocess.Popen([a.bin, "--config", node_conf(tmp, i, port, admin, rport)],
                                          env=env, stderr=subprocess.DEVNULL))
            nodes.append((port, admin))
        for port, admin in nodes:
            wait_port(port)
            wait_port(admin)
        adm = http.client.HTTPConnection("127.0.0.1", nodes[0][1], timeout=10)
        clients = {n: http.client.HTTPConnection("127.0.0.1", nodes[n][0], timeout=10) for n in (1, 2)}
        lat = {1: [], 2: []}
        for i in range(a.changes):
            value = f"fleet-latency-key-{i:06d}-abcdefgh"
            body = json.dumps({"name": f"k{i}", "value": value, "plan": "gold"})
            adm = http.client.HTTPConnection("127.0.0.1", nodes[0][1], timeout=10)
            adm.request("POST", "/apikeys", body, {"Authorization": f"Bearer {TOKEN}",
                                                    "Content-Type": "application/json"})
            r = adm.getresponse()
            r.read()
            adm.close()
            if r.status != 201:
                sys.exit(f"create answered {r.status}")
            t0 = time.perf_counter()
            for n in (1, 2):
                while True:
                    c = clients[n]
                    c.request("GET", "/keyed", headers={"x-api-key": value})
                    resp = c.getresponse()
                    resp.read()
                    if resp.status == 200:
                        lat[n].append((time.perf_counter() - t0) * 1000)
                        break
                    if time.perf_counter() - t0 > 10:
                        sys.exit(f"change {i} did not reach node {n} within 10 s")
        if a.catch_up:
            last = ""
            for start in range(0, a.catch_up, 5000):
                rows = ["Name,Key,UsagePlanIds"]
                for i in range(start, min(a.catch_up, start + 5000)):
                    last = f"fleet-catch-up-key-{i:07d}-abcdefgh"
                    rows.append(f"c{i},{last},gold")
                adm = http.client.HTTPConnection("127.0.0.1", nodes[0][1], timeout=60)
                adm.request("POST", "/apikeys/import", "\n".join(rows) + "\n",
                            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/csv"})
                r = adm.getresponse()
                body = r.read()
                if r.status != 200:
                    sys.exit(f"import answered {r.status}: {body[:200]!r}")
            port, admin = free_port(), free_port()
            t0 = time.perf_counter()
            d = subprocess.Popen([a.bin, "--config", node_conf(tmp, 3, port, admin, rport)],
                                 env=env, stderr=subprocess.DEVNULL)
            procs.append(d)
            wait_port(port)
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            while True:
                c.request("GET", "/keyed", headers={"x-api-key": last})
                resp = c.getresponse()
                resp.read()
                if resp.status == 200:
                    break
                if time.perf_counter() - t0 > 120:
                    sys.exit("the new node did not catch up within 120 s")
                time.sleep(0.01)
            took = time.perf_counter() - t0
            with open(f"/proc/{d.pid}/status") as f:
                rss = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
            print(f"catch-up: a new node admits the last of {a.catch_up + a.changes} keys "
                  f"{took:.2f} s after it started; RSS {rss / 1024:.1f} MiB")
        for n in (1, 2):
            xs = lat[n]
            print(f"node {'ABC'[n]}: {len(xs)} changes: p50 {pct(xs, 0.5):.2f} ms, p99 {pct(xs, 0.99):.2f} ms, "
                  f"max {max(xs):.2f} ms (from A's answer until the node admits the key)")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
