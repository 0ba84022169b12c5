#!/usr/bin/env python3
"""Zero-downtime upgrades under load: wrk drives a gateway (one worker) while it is replaced
N times by SIGUSR2 (each successor takes over the sockets and the state store); prints wrk's
requests, errors and latency, and each hand-over's time (SIGUSR2 to the successor's
"took over" log line).

  python3 scripts/upgrade_load.py --bin target/release/tollgate [--upgrades 5] [--seconds 10]

Stops what it started by PID (the last successor included).
"""
import argparse, json, os, socket, subprocess, sys, tempfile, threading, time


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--upgrades", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--close", action="store_true", help="a new connection per request")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tollgate-upgrade-")
    port = free_port()
    conf = os.path.join(tmp, "gw.toml")
    with open(conf, "w") as f:
        f.write(f"""
[server]
workers = 1
state_dir = "{tmp}/data"
[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
[[apis]]
name = "a"
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "GET /status"
  integration = {{ type = "mock", body = "ok" }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "a", stage = "p" }}]
""")
    log = open(os.path.join(tmp, "gw.log"), "w+")
    gw = subprocess.Popen([os.path.abspath(a.bin), "--config", conf, "--log-format", "json"],
                          stderr=log, env=dict(os.environ, TOLLGATE_LOG="info"))
    pids = [gw.pid]
    def lines():
        log.flush()
        with open(log.name) as f:
            return [json.loads(l) for l in f if l.startswith("{")]
    deadline = time.time() + 10
    while not any(l["fields"].get("message") == "a successor may take over (tollgate --take-over)" for l in lines()):
        if time.time() > deadline:
            sys.exit("the gateway did not start")
        time.sleep(0.05)
    wrk = subprocess.Popen(["wrk", "-t1", f"-c{a.connections}", f"-d{a.seconds}s", "--latency", *(["-H", "Connection: close"] if a.close else []),
                            f"http://127.0.0.1:{port}/status"], stdout=subprocess.PIPE, text=True)
    handovers = []
    time.sleep(1)
    gap = (a.seconds - 2) / max(a.upgrades, 1)
    for _ in range(a.upgrades):
        seen = len([l for l in lines() if l["fields"].get("message") == "took over the listening sockets and the state store"])
        t0 = time.time()
        os.kill(pids[-1], 10 + 2)  # SIGUSR2
        while True:
            ls = lines()
            took = [l for l in ls if l["fields"].get("message") == "took over the listening sockets and the state store"]
            started = [l for l in ls if l["fields"].get("message") == "SIGUSR2: started a successor to take over"]
            if len(took) > seen and len(started) > len(pids) - 1:
                handovers.append(time.time() - t0)
                pids.append(int(started[-1]["fields"]["pid"]))
                break
            if time.time() - t0 > 10:
                sys.exit("no take-over within 10 s")
            time.sleep(0.005)
        time.sleep(max(gap - handovers[-1], 0.1))
    out = wrk.communicate()[0]
    for p in reversed(pids):
        try:
            os.kill(p, 15)
        except ProcessLookupError:
            pass
    gw.wait(timeout=20)
    print(out)
    print("hand-over times (SIGUSR2 to 'took over'): " + ", ".join(f"{h * 1000:.0f} ms" for h in handovers))


if __name__ == "__main__":
    main()
