#!/usr/bin/env python3
"""Run-time APIs at scale: N APIs of R routes imported through the admin API (each then
deployed to a stage and mapped to its own host), timing each step, then the gateway's RSS, one
more change (a compile of everything) and a reload of the file.

  python3 scripts/lifecycle_scale.py --bin target/release/tollgate [--apis 100] [--routes 50]
"""
import argparse, json, os, socket, subprocess, tempfile, time, urllib.request

TOKEN = "scale"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def call(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.load(r)
    return out, time.perf_counter() - t


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--apis", type=int, default=100)
    ap.add_argument("--routes", type=int, default=50)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tollgate-scale-")
    port, admin = free_port(), free_port()
    cfg = os.path.join(tmp, "config.toml")
    open(cfg, "w").write(f"""[server]\nworkers = 1\nstate_dir = "{tmp}/data"\n[[listeners]]\nname = "http"\naddr = "127.0.0.1:{port}"\n[admin]\naddr = "127.0.0.1:{admin}"\ntoken_env = "TG_SCALE"\n""")
    p = subprocess.Popen([a.bin, "--config", cfg], env=dict(os.environ, TG_SCALE=TOKEN, TOLLGATE_LOG="warn"))
    try:
        for _ in range(200):
            try:
                call(admin, "GET", "/healthz"); break
            except OSError:
                time.sleep(0.05)
        rss0 = rss_mib(p.pid)
        steps = {"import": [], "deploy": [], "map": []}
        for i in range(a.apis):
            paths = {f"/r{j}/{{id}}": {"get": {"responses": {"200": {"description": "ok"}},
                     "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200", "responseTemplates": {"text/plain": f"{i}-{j}"}}}}}}
                     for j in range(a.routes)}
            doc = {"openapi": "3.0.1", "info": {"title": f"api{i}", "version": "1"}, "paths": paths}
            _, t = call(admin, "POST", "/apis?mode=import", doc); steps["import"].append(t)
            _, t = call(admin, "POST", f"/apis/api{i}/deployments", {"stage": "prod"}); steps["deploy"].append(t)
            _, t = call(admin, "POST", "/domains", {"host": f"api{i}.test", "api": f"api{i}", "stage": "prod"}); steps["map"].append(t)
        rss1 = rss_mib(p.pid)
        _, change = call(admin, "POST", f"/apis/api0/deployments", {"stage": "prod"})
        _, reload = call(admin, "POST", "/reload")
        n = a.apis * a.routes
        print(f"{a.apis} APIs x {a.routes} routes = {n} routes, one stage and host each")
        for k, v in steps.items():
            print(f"  {k:7}: first {v[0]*1000:.1f} ms, last {v[-1]*1000:.1f} ms, total {sum(v):.1f} s")
        print(f"  one more deployment (a compile of everything): {change*1000:.0f} ms")
        print(f"  reload of the file (with every run-time API): {reload*1000:.0f} ms")
        print(f"  RSS: {rss0:.1f} MiB before, {rss1:.1f} MiB after ({(rss1-rss0)*1024/n:.2f} KiB per route)")
        # The same objects loaded and compiled once: what stays, without the changes' churn.
        p.terminate(); p.wait(timeout=30)
        t = time.perf_counter()
        p = subprocess.Popen([a.bin, "--config", cfg], env=dict(os.environ, TG_SCALE=TOKEN, TOLLGATE_LOG="warn"))
        for _ in range(6000):
            try:
                call(admin, "GET", "/healthz"); break
            except OSError:
                time.sleep(0.01)
        start = time.perf_counter() - t
        rss2 = rss_mib(p.pid)
        print(f"  restart with them: ready in {start*1000:.0f} ms, RSS {rss2:.1f} MiB ({(rss2-rss0)*1024/n:.2f} KiB per route)")
    finally:
        p.terminate(); p.wait(timeout=30)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
