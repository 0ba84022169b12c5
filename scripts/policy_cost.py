#!/usr/bin/env python3
"""Hot-path cost of a resource policy: the same mock route with and without one, same run,
alternating rounds; one worker pinned to CPU 1, wrk on CPU 0. Prints CPU µs per request
(utime+stime of the gateway over requests served) and req/s for each, and the ratio.

  python3 scripts/policy_cost.py --bin target/release/tollgate [--rounds 5] [--seconds 5]
"""
import argparse, os, re, socket, subprocess, tempfile, time


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def conf(tmp, port, policy):
    path = os.path.join(tmp, f"gw-{port}.toml")
    with open(path, "w") as f:
        f.write(f"""
[server]
workers = 1
state_dir = "{tmp}/data-{port}"
[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
[[apis]]
name = "a"
{'resource_policy = { allow = ["127.0.0.0/8", "10.0.0.0/8", "::1/128"], deny = ["10.66.0.0/16", "192.0.2.0/24"] }' if policy else ''}
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "GET /m"
  integration = {{ type = "mock", body = "ok" }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "a", stage = "p" }}]
""")
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tollgate-policy-")
    hz = os.sysconf("SC_CLK_TCK")
    results = {"without": [], "with": []}
    for r in range(a.rounds):
        for name in (("without", "with") if r % 2 == 0 else ("with", "without")):
            port = free_port()
            p = subprocess.Popen(["taskset", "-c", "1", a.bin, "--config", conf(tmp, port, name == "with")],
                                 env=dict(os.environ, TOLLGATE_LOG="warn"), stderr=subprocess.DEVNULL)
            end = time.time() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close(); break
                except OSError:
                    if time.time() > end: raise SystemExit("did not start")
                    time.sleep(0.05)
            t0 = cpu_ticks(p.pid)
            out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c32", f"-d{a.seconds}s",
                                  f"http://127.0.0.1:{port}/m"], capture_output=True, text=True).stdout
            t1 = cpu_ticks(p.pid)
            p.terminate(); p.wait(timeout=20)
            reqs = int(re.search(r"(\d+) requests in", out).group(1))
            results[name].append(((t1 - t0) / hz * 1e6 / reqs, reqs / a.seconds))
    med = lambda xs: sorted(xs)[len(xs) // 2]
    for name, rs in results.items():
        print(f"{name:8} policy: {med([c for c, _ in rs]):.2f} µs CPU/request, {med([q for _, q in rs]):.0f} req/s (median of {len(rs)})")
    w, wo = med([c for c, _ in results["with"]]), med([c for c, _ in results["without"]])
    print(f"ratio with/without: {w / wo:.3f}")


if __name__ == "__main__":
    main()
