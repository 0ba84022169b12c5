#!/usr/bin/env python3
"""Scaling curve: Tollgate with 1, 2, 4, 8 ... shards against nginx (and HAProxy) with as many
workers (threads), on one many-core machine.

Layout on a machine of C CPUs (C >= 8): the proxy's shards/workers/threads are pinned to CPUs
0..N-1 (N at most C/2); wrk runs on CPUs C/2..3C/4-1 (one thread per CPU) and the backend (nginx,
one worker per CPU, `return 200`, keep-alive) on CPUs 3C/4..C-1, so the load side is the same
for every N and never shares a CPU with the proxy. On a smaller machine everything but the
proxy shares the CPUs after the first (a smoke test, not a measurement).

Per run: the proxy's CPU time (every thread of it and of its child processes, from
/proc/*/task/*/schedstat) over the requests completed, req/s, p99, and how busy the proxy's CPUs
were (CPU seconds / (seconds x N)): when that is well under 1 the load side, not the proxy, set
the rate, and CPU per request is the figure to compare. `direct` is wrk straight at the backend:
the most the load side can do. Rounds alternate the systems; the table gives medians.

  python3 scripts/scaling.py --tollgate target/release/tollgate --shards 1,2,4,8 --rounds 3 \
      --seconds 5 --out bench/results/scaling-DATE

Systems: tollgate (own io_uring runtime), tollgate-epoll, tollgate-basic (monoio's io_uring
driver), tollgate-defer / tollgate-noflags (setup flags), tollgate-base (TOLLGATE_BASE_BIN, for
an A/B in one run), nginx, haproxy. Each run also records wrk's own CPU per request and the
connections waiting in the listeners' accept queues (/proc/net/tcp, every 100 ms), and, after
it, the client's share of the TIME_WAIT sockets (the side that closed first holds one).

Binaries (wrk, nginx, haproxy) come from PATH or --bin-dir; --lib-dir is put on LD_LIBRARY_PATH
for them (to carry them to a machine that lacks them). Writes runs.jsonl as it goes, then
summary.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import URING_FLAGS, WRK_REPORT, free_port, haproxy_conf, tollgate_conf, wait_port  # noqa: E402

WORKLOADS = {
    "small_get": ("/small", []),
    "new_conn": ("/small", ["-H", "Connection: close"]),
    "get_1k": ("/1k", []),
}
BINS: dict[str, str] = {}
LIB_ENV: dict[str, str] = {}


def cpus_str(cpus: list[int]) -> str:
    return ",".join(map(str, cpus))


def layout(n_cpu: int) -> tuple[list[int], list[int], list[int]]:
    """(proxy CPUs available, wrk CPUs, backend CPUs)."""
    if n_cpu >= 8:
        half, quarter = n_cpu // 2, n_cpu // 4
        return list(range(half)), list(range(half, half + quarter)), list(range(half + quarter, n_cpu))
    rest = list(range(1, n_cpu)) or [0]
    return [0], rest, rest


def tune() -> list[str]:
    """Best effort, for many connections per second on loopback (root only)."""
    done = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200000, 200000))
        done.append("nofile=200000")
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        done.append(f"nofile={hard}")
    if os.geteuid() == 0 and os.environ.get("SCALING_SYSCTL") == "1":
        for key, val in (("net.ipv4.tcp_tw_reuse", "1"), ("net.ipv4.ip_local_port_range", "1024 65000"),
                         ("net.core.somaxconn", "65535"), ("net.ipv4.tcp_max_syn_backlog", "65535")):
            path = "/proc/sys/" + key.replace(".", "/")
            try:
                Path(path).write_text(val)
                done.append(f"{key}={val}")
            except OSError:
                pass
    return done


def tree_cpu_ns(root: int) -> int:
    """CPU time of every thread of `root` and its descendants, in nanoseconds."""
    return sum(thread_cpu_ns(root).values())


def thread_cpu_ns(root: int) -> dict[str, int]:
    """CPU time of each thread of `root` and its descendants (keyed pid/tid), in nanoseconds."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    pids, todo = [root], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        pids += kids
        todo += kids
    per: dict[str, int] = {}
    for pid in pids:
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                try:
                    per[f"{pid}/{t}"] = int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
                except (OSError, ValueError):
                    pass
        except OSError:
            pass
    return per


class Proc:
    def __init__(self, name: str, cmd: list[str], cpus: list[int], tmp: Path, env: dict | None = None):
        self.name = name
        self.log_path = tmp / f"{name}.log"
        self.log = open(self.log_path, "wb")
        full = dict(os.environ, **LIB_ENV, **(env or {}))
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full, start_new_session=True,
                                  preexec_fn=lambda: os.sched_setaffinity(0, set(cpus)))

    def stop(self) -> None:
        if self.p.poll() is None:
            # The whole process group: nginx's and HAProxy's workers with their master.
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.log.close()

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-1500:]


def masks(cpus: list[int]) -> str:
    width = max(cpus) + 1
    return " ".join(format(1 << c, f"0{width}b") for c in cpus)


def temps(tmp: Path) -> str:
    """nginx's temporary folders under tmp (the built-in ones may not exist on the machine)."""
    return " ".join(f"{k}_temp_path {tmp}/{k}_temp;" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def backend_conf(tmp: Path, port: int, cpus: list[int]) -> Path:
    www = tmp / "www"
    www.mkdir(exist_ok=True)
    (www / "1k").write_bytes(b"a" * 1024)
    conf = tmp / "backend.conf"
    conf.write_text(f"""
daemon off; master_process on; worker_processes {len(cpus)}; worker_cpu_affinity {masks(cpus)};
error_log stderr error; pid {tmp}/backend.pid; worker_rlimit_nofile 200000;
events {{ worker_connections 100000; }}
http {{
  {temps(tmp)}
  access_log off; keepalive_requests 10000000; keepalive_timeout 300s; sendfile on; tcp_nopush on;
  default_type application/octet-stream; open_file_cache max=100 inactive=600s;
  server {{
    listen 127.0.0.1:{port} backlog=65535 reuseport;
    location = /small {{ return 200 "hello, world\\n"; }}
    location / {{ root {www}; }}
  }}
}}
""")
    return conf


def start(system: str, n: int, cpus: list[int], tmp: Path, backend: int) -> tuple[Proc, int]:
    port = free_port()
    mine = cpus[:n]
    if system.startswith("tollgate"):
        driver = {"tollgate-epoll": "epoll", "tollgate-basic": "io_uring_basic"}.get(system, "io_uring")
        binary = os.environ.get("TOLLGATE_BASE_BIN", "") if system == "tollgate-base" else BINS["tollgate"]
        if not binary:
            raise RuntimeError("tollgate-base needs TOLLGATE_BASE_BIN")
        # bench.py's config for its `tollgate` system (one route to the backend), with n shards
        # pinned to the proxy's CPUs.
        pin = f"pin = true\ncpus = [{', '.join(map(str, mine))}]"
        conf = tollgate_conf(tmp, port, backend, False, driver, workers=n,
                             flags=f"{URING_FLAGS.get(system, '')}\n{pin}")
        p = Proc(f"{system}-{n}", [binary, "--config", str(conf)], mine, tmp, {"TOLLGATE_LOG": "warn"})
    elif system == "nginx":
        conf = tmp / "nginx.conf"
        conf.write_text(f"""
daemon off; master_process on; worker_processes {n}; worker_cpu_affinity {masks(mine)};
error_log stderr error; pid {tmp}/nginx.pid; worker_rlimit_nofile 200000;
events {{ worker_connections 100000; }}
http {{
  {temps(tmp)}
  access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  upstream be {{ server 127.0.0.1:{backend}; keepalive 64; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=65535 reuseport;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
        p = Proc(f"nginx-{n}", [BINS["nginx"], "-e", "stderr", "-p", str(tmp), "-c", str(conf)], mine, tmp)
    elif system == "haproxy":
        maxconn = min(100000, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100) // 2)
        conf = haproxy_conf(tmp, port, backend, threads=n, first_cpu=mine[0], maxconn=maxconn, server_maxconn=maxconn)
        p = Proc(f"haproxy-{n}", [BINS["haproxy"], "-db", "-f", str(conf)], mine, tmp)
    else:
        raise ValueError(system)
    try:
        wait_port(port)
    except RuntimeError:
        p.stop()
        raise RuntimeError(f"{system} with {n} did not start:\n{p.tail()}")
    return p, port


def sample_accept_queue(port: int, out: list[int], stop: threading.Event) -> None:
    """Connections waiting to be accepted on `port` (every listening socket), every 100 ms."""
    hexport = f":{port:04X}"
    while not stop.wait(0.1):
        total = 0
        try:
            with open("/proc/net/tcp") as f:
                for line in f:
                    cols = line.split()
                    # local address, state 0A = LISTEN, tx_queue:rx_queue (rx = accept queue)
                    if len(cols) > 4 and cols[1].endswith(hexport) and cols[3] == "0A":
                        total += int(cols[4].split(":")[1], 16)
        except OSError:
            return
        out.append(total)


def time_wait_sides(port: int) -> tuple[int, int]:
    """TIME_WAIT sockets of connections to `port`: (held by the proxy's side, by the client's).
    The side that closes first holds it; a client holding many runs short of ports."""
    hexport = f":{port:04X}"
    server = client = 0
    try:
        with open("/proc/net/tcp") as f:
            for line in f:
                cols = line.split()
                if len(cols) > 3 and cols[3] == "06":  # TIME_WAIT
                    server += cols[1].endswith(hexport)
                    client += cols[2].endswith(hexport)
    except OSError:
        pass
    return server, client


def wrk(tmp: Path, port: int, workload: str, secs: float, conns: int, cpus: list[int]) -> dict:
    path, extra = WORKLOADS[workload]
    lua = tmp / "report.lua"
    lua.write_text(WRK_REPORT)
    threads = min(len(cpus), conns)
    cmd = [BINS["wrk"], f"-t{threads}", f"-c{conns}", f"-d{max(1, int(secs))}s", "--timeout", "5s", "-s", str(lua)] + extra + [
        f"http://127.0.0.1:{port}{path}"]
    queues: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_accept_queue, args=(port, queues, stop), daemon=True)
    sampler.start()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60, env=dict(os.environ, **LIB_ENV),
                           preexec_fn=lambda: os.sched_setaffinity(0, set(cpus)))
    finally:
        stop.set()
        sampler.join()
    ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for line in r.stdout.splitlines():
        if line.startswith("JSON "):
            d = json.loads(line[5:])
            return {"requests": d["requests"], "seconds": d["duration_us"] / 1e6, "errors": d["errors"],
                    "p50_ms": d["p50"] / 1000, "p99_ms": d["p99"] / 1000,
                    # wrk's own CPU per request, and connections waiting in the listeners'
                    # accept queues (sampled every 100 ms): where a closed loop's time goes
                    # when the proxy is not busy.
                    "wrk_us_per_req": (ru2.ru_utime + ru2.ru_stime - ru.ru_utime - ru.ru_stime) * 1e6 / max(1, d["requests"]),
                    "accept_queue_mean": statistics.mean(queues) if queues else 0.0,
                    "accept_queue_max": max(queues, default=0)}
    raise RuntimeError(f"wrk gave no report:\n{r.stdout}\n{r.stderr}")


def measure(system: str, n: int, workload: str, tmp: Path, backend: int, lay, secs: float, per_shard: int) -> dict:
    gw, wrk_cpus, _ = lay
    p, port = start(system, n, gw, tmp, backend)
    try:
        conns = max(per_shard * n, len(wrk_cpus))
        wrk(tmp, port, workload, 1, conns, wrk_cpus)  # warm-up: every shard's listener up, pools full
        before = thread_cpu_ns(p.p.pid)
        r = wrk(tmp, port, workload, secs, conns, wrk_cpus)
        after = thread_cpu_ns(p.p.pid)
        tw_server, tw_client = time_wait_sides(port)
        threads = sorted((after[t] - before.get(t, 0)) / 1e9 for t in after)
        cpu = sum(after.values()) - sum(before.values())
        if p.p.poll() is not None:
            raise RuntimeError(f"{system} exited:\n{p.tail()}")
    finally:
        p.stop()
    r.update(system=system, shards=n, workload=workload, conns=conns, cpu_s=cpu / 1e9,
             rps=r["requests"] / r["seconds"], us_per_req=cpu / 1e3 / max(1, r["requests"]),
             busy=cpu / 1e9 / (r["seconds"] * n),
             # Which side closed first (new connections): the client's share of TIME_WAITs.
             tw_client_share=tw_client / max(1, tw_server + tw_client),
             # The n busiest threads' share of the run: uneven shards show as a spread here.
             thread_busy=[round(t / r["seconds"], 3) for t in threads[-n:]])
    return r


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for r in runs:
        out.setdefault(r["workload"], {}).setdefault(str(r["shards"]), {}).setdefault(r["system"], []).append(r)
    summary: dict = {}
    for wl, by_n in out.items():
        for n, by_sys in by_n.items():
            for s, rs in by_sys.items():
                ok = [r for r in rs if r["errors"] == 0] or rs
                keys = ("rps", "us_per_req", "busy", "p99_ms", "wrk_us_per_req", "accept_queue_mean", "tw_client_share")
                summary.setdefault(wl, {}).setdefault(n, {})[s] = {
                    k: med([r[k] for r in ok if k in r]) for k in keys}
                summary[wl][n][s]["runs"] = len(rs)
                summary[wl][n][s]["errors"] = sum(r["errors"] for r in rs)
    return summary


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"# Scaling curve, {meta['date']}", "",
             f"Machine: {meta['cpus']} CPUs ({meta['model']}), kernel {meta['kernel']}. Proxy CPUs "
             f"{meta['layout'][0]}, wrk {meta['layout'][1]}, backend {meta['layout'][2]}; "
             f"{meta['rounds']} alternated rounds of {meta['seconds']} s, {meta['per_shard']} connections per shard. "
             f"Tuning: {', '.join(meta['tuned']) or 'none'}.", ""]
    if "direct" in meta:
        lines += [f"Load side alone (wrk straight at the backend): {meta['direct']['rps']:,.0f} req/s.", ""]
    for wl, by_n in summary.items():
        systems = sorted({s for v in by_n.values() for s in v}, key=lambda s: (s != "tollgate", s))
        lines += [f"## {wl}", "",
                  "| shards | " + " | ".join(f"{s} req/s | {s} µs CPU/req | {s} busy | {s} p99 ms" for s in systems)
                  + " | tollgate / best peer, CPU/req | tollgate scaling eff. |",
                  "|---" * (1 + 4 * len(systems) + 2) + "|"]
        base = by_n.get("1", {}).get("tollgate", {}).get("rps")
        for n in sorted(by_n, key=int):
            row = by_n[n]
            cells = []
            for s in systems:
                v = row.get(s)
                cells += ([f"{v['rps']:,.0f}", f"{v['us_per_req']:.2f}", f"{v['busy']:.2f}", f"{v['p99_ms']:.2f}"]
                          if v else ["-"] * 4)
            peers = [row[s]["us_per_req"] for s in ("nginx", "haproxy") if s in row]
            ratio = f"{row['tollgate']['us_per_req'] / min(peers):.2f}" if "tollgate" in row and peers else "-"
            eff = f"{row['tollgate']['rps'] / (int(n) * base):.2f}" if base and "tollgate" in row else "-"
            lines.append(f"| {n} | " + " | ".join(cells) + f" | {ratio} | {eff} |")
        lines.append("")
        # Where a closed loop's time goes when the proxy is not busy: the load generator's own
        # CPU per request, connections waiting to be accepted, and which side closed first.
        lines += ["Load side: wrk µs CPU/req, mean accept queue, client's share of TIME_WAITs.", "",
                  "| shards | " + " | ".join(systems) + " |", "|---" * (1 + len(systems)) + "|"]
        for n in sorted(by_n, key=int):
            cells = []
            for s in systems:
                v = by_n[n].get(s)
                cells.append(f"{v['wrk_us_per_req']:.1f}, {v['accept_queue_mean']:.1f}, {v['tw_client_share']:.1%}"
                             if v else "-")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tollgate", default="target/release/tollgate")
    ap.add_argument("--bin-dir", default=None, help="where wrk, nginx and haproxy are (default: PATH)")
    ap.add_argument("--lib-dir", default=None, help="put on LD_LIBRARY_PATH for wrk, nginx and haproxy")
    ap.add_argument("--shards", default="1,2,4,8")
    ap.add_argument("--systems", default="tollgate,nginx,haproxy")
    ap.add_argument("--workloads", default="small_get")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--per-shard", type=int, default=64, help="client connections per shard")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    if a.lib_dir:
        LIB_ENV["LD_LIBRARY_PATH"] = str(Path(a.lib_dir).resolve())
    BINS["tollgate"] = str(Path(a.tollgate).resolve())
    for b in ("wrk", "nginx", "haproxy"):
        cand = Path(a.bin_dir, b) if a.bin_dir else None
        BINS[b] = str(cand.resolve()) if cand and cand.exists() else (shutil.which(b) or b)
    systems = [s for s in a.systems.split(",") if s]
    n_cpu = len(os.sched_getaffinity(0))
    lay = layout(n_cpu)
    shards = [int(x) for x in a.shards.split(",") if int(x) <= len(lay[0])]
    # This script (and its accept-queue sampler) stays off the proxy's CPUs.
    os.sched_setaffinity(0, set(lay[1]))
    out = Path(a.out or f"bench/results/scaling-{time.strftime('%Y-%m-%d')}")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-scaling-"))
    os.chmod(tmp, 0o755)  # nginx's workers run as nobody when started by root
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": n_cpu, "model": model,
            "kernel": platform.release(), "layout": [cpus_str(x) for x in lay], "rounds": a.rounds,
            "seconds": a.seconds, "per_shard": a.per_shard, "tuned": tune(), "shards": shards}
    try:
        meta["siblings"] = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text().strip()
    except OSError:
        pass
    print(json.dumps(meta), flush=True)
    bport = free_port()
    backend = Proc("backend", [BINS["nginx"], "-e", "stderr", "-p", str(tmp), "-c", str(backend_conf(tmp, bport, lay[2]))],
                   lay[2], tmp)
    runs: list[dict] = []
    log = open(out / "runs.jsonl", "a")
    try:
        wait_port(bport)
        d = wrk(tmp, bport, "small_get", a.seconds, a.per_shard * max(shards), lay[1])
        meta["direct"] = {"rps": d["requests"] / d["seconds"], "p99_ms": d["p99_ms"], "errors": d["errors"]}
        print(f"direct {meta['direct']['rps']:,.0f} req/s", flush=True)
        for wl in a.workloads.split(","):
            for rnd in range(a.rounds):
                for n in shards:
                    order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
                    for s in order:
                        try:
                            r = measure(s, n, wl, tmp, bport, lay, a.seconds, a.per_shard)
                        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                            print(f"{wl} {s} x{n}: FAILED {e}", flush=True)
                            continue
                        r["round"] = rnd
                        runs.append(r)
                        log.write(json.dumps(r) + "\n")
                        log.flush()
                        print(f"{wl} r{rnd} {s:8} x{n}: {r['rps']:>10,.0f} req/s {r['us_per_req']:6.2f} µs/req "
                              f"busy {r['busy']:.2f} {r['thread_busy'][0]:.2f}-{r['thread_busy'][-1]:.2f} p99 {r['p99_ms']:.2f} ms "
                              f"wrk {r['wrk_us_per_req']:.1f} µs/req acceptq {r['accept_queue_mean']:.1f}/{r['accept_queue_max']} "
                              f"client TIME_WAIT {r['tw_client_share']:.1%} "
                              f"err {r['errors']}", flush=True)
    finally:
        backend.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = summarise(runs)
    (out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1))
    md = markdown(summary, meta)
    (out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
