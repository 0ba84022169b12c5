#!/usr/bin/env python3
"""A fleet under load takes a stream of admin changes: a redis-server and three Tollgate nodes
(`[cluster]`, one shard each). Node B serves API-key-checked GETs under wrk, pinned to CPU 0
(everything else on CPU 1). Rounds alternate: wrk alone, then wrk while nodes A and C make
admin changes one after another (API keys created, renamed, disabled, deleted; a run-time
API's stage variables patched and new deployments made), until --changes in all. Between
them, a phase where A and C answer admin reads at the same pace instead: it loads the load
generator's CPU as the changes do, so that B's CPU per request compares like with like (it
grows as the request rate falls: fewer requests per wake-up).

Prints, per phase: the CPU time of B's shard threads per request (from /proc, user + system),
requests/s, the CPU time of B's control thread per change it applied, the fleet's key count
(it stays near 1,000: past it, keys are deleted as fast as they are made) and the nodes' RSS; then checks that no change was lost: every node lists exactly the keys the
changes left (names, enabled flags) and serves the run-time stage's last variable. Exits 1
if anything differs.

  python3 scripts/fleet_soak.py --bin target/release/tollgate --changes 10000

Needs redis-server and wrk (apt). Stops what it started by PID; ends by itself.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet_latency import free_port, node_conf, wait_port  # noqa: E402

TOKEN = "fleet-soak-token"
LOAD_KEY = "fleet-soak-load-key-0123456789"
KEPT = 1000


def call(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, json.dumps(body) if body is not None else None,
              {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data else None)


def cpu_s(pid):
    """CPU seconds (user + system) of the process's shard threads and of its control thread."""
    shard = control = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        t = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if name.startswith("tollgate-shard"):
            shard += t
        elif name.startswith("tollgate-contro"):
            control += t
    return shard, control


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Changes:
    """Admin changes on nodes A and C, and the state they must leave."""

    def __init__(self, admins):
        self.admins = admins
        self.keys = {}       # id -> (name, enabled)
        self.order = []      # ids, oldest first
        self.done = 0
        self.variable = None
        self.failed = []

    def one(self):
        i = self.done
        port = self.admins[i % 2]
        if i % 50 == 49:
            self.variable = f"v{i}"
            st, b = call(port, "PATCH", "/apis/rt/stages/prod", {"variables": {"v": self.variable}})
        elif i % 200 == 199:
            st, b = call(port, "POST", "/apis/rt/deployments", {"stage": "prod"})
        elif self.order and (i % 5 == 4 or (len(self.order) >= KEPT and i % 3 == 0)):
            # Past KEPT keys, as many deleted as created: the fleet's size stays put.
            kid = self.order.pop(0)
            st, b = call(port, "DELETE", f"/apikeys/{kid}")
            del self.keys[kid]
        elif i % 3 == 2 and self.order:
            kid = self.order[len(self.order) // 2]
            name, enabled = self.keys[kid]
            st, b = call(port, "PATCH", f"/apikeys/{kid}", {"name": f"r{i}", "enabled": not enabled})
            self.keys[kid] = (f"r{i}", not enabled)
        else:
            st, b = call(port, "POST", "/apikeys", {"name": f"k{i}", "plan": "gold"})
            if st == 201:
                self.keys[b["id"]] = (f"k{i}", True)
                self.order.append(b["id"])
        if st not in (200, 201):
            self.failed.append((i, st, b))
        self.done += 1

    def read(self, i):
        """An admin read instead of a change: the same work for the load generator's CPU."""
        call(self.admins[i % 2], "GET", "/apis/rt/stages/prod")


def wrk(port, seconds):
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s", "-H", f"x-api-key: {LOAD_KEY}",
         f"http://127.0.0.1:{port}/keyed"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(m.group(1)), int(non2xx.group(1)) if non2xx else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--changes", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=15)
    a = ap.parse_args()
    for tool in ("redis-server", "wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing")
    tmp = tempfile.mkdtemp(prefix="tollgate-soak-")
    procs = []
    try:
        rport = free_port()
        procs.append(subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(rport),
                                       "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(rport)
        nodes = []
        env = dict(os.environ, TOLLGATE_LOG="warn", FLEET_TOKEN=TOKEN)
        for i in range(3):
            port, admin = free_port(), free_port()
            cpu = "0" if i == 1 else "1"
            p = subprocess.Popen(["taskset", "-c", cpu, a.bin, "--config",
                                  node_conf(tmp, i, port, admin, rport)],
                                 env=env, stderr=subprocess.DEVNULL)
            procs.append(p)
            nodes.append((port, admin, p.pid))
        for port, admin, _ in nodes:
            wait_port(port)
            wait_port(admin)
        (pa, aa, _), (pb, ab, bpid), (pc, ac, _) = nodes
        st, _ = call(aa, "POST", "/apikeys", {"name": "load", "value": LOAD_KEY, "plan": "gold"})
        assert st == 201, st
        st, b = call(aa, "POST", "/apis", {"name": "rt", "routes": [
            {"route": "GET /v", "integration": {"type": "mock", "body": "${stageVariables.v}"}}]})
        assert st == 201, (st, b)
        st, b = call(aa, "POST", "/apis/rt/stages", {"name": "prod", "deployment": call(
            aa, "POST", "/apis/rt/deployments", {})[1]["id"], "variables": {"v": "start"}})
        assert st == 201, (st, b)
        deadline = time.time() + 10
        while time.time() < deadline and call(ab, "GET", "/apis/rt/stages/prod")[0] != 200:
            time.sleep(0.05)
        wrk(pb, 2)  # warm
        changes = Changes([aa, ac])
        per_round = a.changes // a.rounds
        results = {"alone": [], "reads": [], "changes": []}
        print(f"{'phase':<10} {'req/s':>9} {'shard/req':>10} {'changes':>8} {'chg/s':>6} "
              f"{'ctl/chg':>8} {'keys':>6} {'A RSS':>8} {'B RSS':>8} {'C RSS':>8}")
        for rnd in range(a.rounds):
            for phase in ("alone", "reads", "changes"):
                stop = threading.Event()
                before_done = changes.done
                target = per_round * (rnd + 1) if rnd < a.rounds - 1 else a.changes

                def work():
                    while changes.done < target and not stop.is_set():
                        changes.one()

                def reads():
                    i = 0
                    while not stop.is_set():
                        changes.read(i)
                        i += 1
                t = {"alone": None, "reads": threading.Thread(target=reads),
                     "changes": threading.Thread(target=work)}[phase]
                (s0, k0), t0 = cpu_s(bpid), time.time()
                if t:
                    t.start()
                n, bad = wrk(pb, a.seconds)
                s1, k1 = cpu_s(bpid)
                during = changes.done - before_done
                stop.set() if phase == "reads" else None
                if t:
                    t.join()  # the rest of the round's changes, after the load
                made = changes.done - before_done
                per_req = (s1 - s0) / max(n, 1) * 1e6
                per_change = (k1 - k0) / during * 1e3 if during else 0.0
                results[phase].append(per_req)
                rss = [rss_kib(p) / 1024 for _, _, p in nodes]
                print(f"{phase:<10} {n / a.seconds:>9.0f} {per_req:>8.2f}µs {made:>8} "
                      f"{during / a.seconds:>6.0f} {per_change:>6.2f}ms {len(changes.keys):>6} "
                      f"{rss[0]:>6.1f}Mi {rss[1]:>6.1f}Mi {rss[2]:>6.1f}Mi"
                      + (f"  ({bad} non-2xx)" if bad else ""))
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"B's shards, CPU per request, median: alone {med['alone']:.2f} µs; while admin reads "
              f"run on A and C {med['reads']:.2f} µs; while changes flow {med['changes']:.2f} µs "
              f"({med['changes'] / med['reads']:.3f}x of reads, the same load on the load generator's "
              f"CPU); ctl/chg: B's control thread's CPU per change applied during the load")
        info = subprocess.run(["redis-cli", "-p", str(rport), "info", "memory"], capture_output=True,
                              text=True).stdout
        used = re.search(r"used_memory_human:(\S+)", info)
        print(f"{changes.done} changes made, {len(changes.failed)} refused; Redis used_memory "
              f"{used.group(1) if used else '?'}")
        for f in changes.failed[:5]:
            print("  refused:", f)
        # No change lost: every node holds what the changes left.
        want = dict(changes.keys)
        lost = 0
        for name, (_, adm, _) in zip("ABC", nodes):
            deadline = time.time() + 10
            while True:
                st, b = call(adm, "GET", "/apikeys")
                have = {k["id"]: (k["name"], k["enabled"]) for k in b["items"] if k["name"] != "load"}
                sv = call(adm, "GET", "/apis/rt/stages/prod")[1]
                var = sv.get("variables", {}).get("v")
                ok = have == want and (changes.variable is None or var == changes.variable)
                if ok or time.time() > deadline:
                    break
                time.sleep(0.1)
            missing = len(set(want) - set(have))
            extra = len(set(have) - set(want))
            wrong = sum(1 for k in want if k in have and have[k] != want[k])
            print(f"node {name}: {len(have)} keys (want {len(want)}): {missing} missing, {extra} extra, "
                  f"{wrong} differ; stage variable {var!r} (want {changes.variable!r})")
            lost += missing + extra + wrong + (var != changes.variable and changes.variable is not None)
        sys.exit(1 if lost or changes.failed else 0)
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
