#!/usr/bin/env python3
"""Same-run A/B of Tollgate variants on a proxied route: several gateways (binaries, drivers,
environment) in front of one nginx backend serving fixed files, wrk rounds alternated between
them; each gateway one worker pinned to CPU 1, nginx and wrk on CPU 0. Prints the median CPU µs
per request of each (all its threads, from schedstat, over the requests served), the ratio to
the first, and every round.

  python3 scripts/proxy_ab.py '[{"name":"basic","bin":"target/release/tollgate","driver":"io_uring_basic"},
                               {"name":"own","bin":"target/release/tollgate","driver":"io_uring"}]' /big.bin 5 3

Arguments: the variants (JSON: name, bin, driver, env, features), the path (/small 13 bytes,
/1k.bin, /big.bin 64 KiB, /256k.bin: over 64 KiB, so its target receives one buffer per
operation), rounds, seconds per round, and optionally connections (default 64).

A variant's "features" turn on the pipeline workload's features one by one on the same route
(the cost of each, measured against the route without it): "key" (an API key required, the key
sent by wrk), "plan" (the key's usage plan throttles, never refusing; implies "key"), "log" (a
JSON access log line per request to a file), "header" (the integration adds a header), "tls"
(the listener speaks TLS, wrk connects with https).

  python3 scripts/proxy_ab.py '[{"name":"plain","bin":"target/release/tollgate"},
                               {"name":"pipeline","bin":"target/release/tollgate","features":["key","plan","log","header"]}]' /small 5 3
"""
import os, subprocess, sys, tempfile, time, socket, json, re, shutil, statistics
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwconf
variants = json.loads(sys.argv[1])  # [{"name":..,"bin":..,"driver":..,"env":{..}}]
path = sys.argv[2]; rounds = int(sys.argv[3]); secs = int(sys.argv[4]); conns = int(sys.argv[5]) if len(sys.argv) > 5 else 64
tmp = tempfile.mkdtemp()
port = gwconf.free_port
be = port()
open(f"{tmp}/big.bin", "wb").write(os.urandom(65536))
open(f"{tmp}/1k.bin", "wb").write(os.urandom(1024))
open(f"{tmp}/256k.bin", "wb").write(os.urandom(262144))
open(f"{tmp}/small", "wb").write(b"hello, world\n")
open(f"{tmp}/be.conf", "w").write(f"""daemon off; master_process off; worker_processes 1; error_log stderr error; pid {tmp}/b.pid;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 10000000;
  server {{ listen 127.0.0.1:{be}; root {tmp}; location / {{ }} }} }}""")
procs = []
bep = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", f"{tmp}/be.conf", "-p", tmp], stderr=subprocess.DEVNULL)
procs.append(bep)
for i, v in enumerate(variants):
    v["port"] = port()
    v["wrk"] = gwconf.key_headers(v.get("features"))
    if "h2" in gwconf.features(v.get("features")):
        sys.exit(f"{v['name']}: wrk speaks no HTTP/2 (instructions.py and per_request_calls.py take \"h2\")")
    v["scheme"] = "https" if "tls" in gwconf.features(v.get("features")) else "http"
    open(f"{tmp}/tg{i}.toml", "w").write(gwconf.gateway_toml(tmp, i, v["port"], be, v.get("driver", "io_uring"), v.get("features")))
    env = dict(os.environ, TOLLGATE_LOG="warn", **v.get("env", {}))
    p = subprocess.Popen(["taskset", "-c", "1", v["bin"], "--config", f"{tmp}/tg{i}.toml"], env=env, stderr=subprocess.DEVNULL)
    procs.append(p); v["proc"] = p; v["res"] = []
def cpu(pid):
    tot = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/schedstat") as f:
            tot += int(f.read().split()[0])
    return tot / 1e3
time.sleep(1.5)
try:
    for v in variants:
        out = subprocess.run(["wrk", "-t1", "-c8", "-d1s", *v["wrk"], f"{v['scheme']}://127.0.0.1:{v['port']}{path}"], capture_output=True, text=True).stdout
        if "Non-2xx" in out or v["proc"].poll() is not None:
            sys.exit(f"{v['name']}: the gateway does not answer 200 on {path}:\n{out}")
    for r in range(rounds):
        for v in variants:
            c0 = cpu(v["proc"].pid)
            out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{secs}s", *v["wrk"], f"{v['scheme']}://127.0.0.1:{v['port']}{path}"], capture_output=True, text=True).stdout
            c1 = cpu(v["proc"].pid)
            n = int(re.search(r"(\d+) requests in", out).group(1))
            v["res"].append((c1 - c0) / n)
    base = statistics.median(variants[0]["res"])
    for v in variants:
        m = statistics.median(v["res"])
        print(f"{v['name']:>14}: {m:7.2f} us/req  ratio {m/base:.3f}  rounds {' '.join(f'{x:.1f}' for x in v['res'])}")
finally:
    for p in procs: p.terminate()
    for p in procs: p.wait()
    shutil.rmtree(tmp, ignore_errors=True)
