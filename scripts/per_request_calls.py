#!/usr/bin/env python3
"""Allocations, clock reads and memory copies per proxied request, counted exactly with uprobes
(perf probe; needs root and a kernel with uprobe events): a gateway build in front of an nginx
backend, N requests one at a time over 4 keep-alive connections, `perf stat` on the probes.

  python3 scripts/per_request_calls.py target/release/tollgate [/tmp/other-build ...] [--requests 2000] [--features tls,h2,...]

Counts the binary's mimalloc entries (`mi_malloc`, `mi_malloc_aligned`, `mi_zalloc`,
`mi_zalloc_aligned`: every Rust allocation takes one) and `clock_gettime` and `memmove` (each variant libc has) in libc. One request at
a time means one runtime turn per request: per-turn work (a clock read, the completion buffer)
is counted once per request here, where a loaded shard shares it among many. Removes the probes
it added and stops the processes it started (by PID).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwconf  # noqa: E402

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


port = gwconf.free_port


def probe(args: list[str]) -> None:
    subprocess.run(["perf", "probe", "-q"] + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--features", default="", help=f"comma-separated, of {', '.join(gwconf.FEATURES)}")
    a = ap.parse_args()
    feats = sorted(gwconf.features([f for f in a.features.split(",") if f]))
    if shutil.which("perf") is None:
        sys.exit("perf is needed (apt-get install linux-perf)")
    tmp = tempfile.mkdtemp()
    procs = []
    added = []
    try:
        be, nginx = gwconf.backend(tmp)
        procs.append(nginx)
        # Left over by an interrupted run.
        subprocess.run(["perf", "probe", "-q", "-d", "tgcount:*"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe(["-x", LIBC, "--add", "tgcount:clock=clock_gettime"])
        added.append("tgcount:clock")
        # libc picks its memmove by the CPU's features: count each variant this libc has.
        moves = []
        for k, sym in enumerate(("__memmove_avx_unaligned_erms", "__memmove_avx512_unaligned_erms",
                                 "__memmove_evex_unaligned_erms")):
            r = subprocess.run(["perf", "probe", "-q", "-x", LIBC, "--add", f"tgcount:memmove{k}={sym}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                added.append(f"tgcount:memmove{k}")
                moves.append(f"tgcount:memmove{k}")
        for i, b in enumerate(a.bins):
            # Every entry a Rust allocation can take into mimalloc (the allocator in main.rs
            # calls `mi_malloc` for word alignment, `mi_malloc_aligned` above it); those the
            # build lacks are skipped.
            evs = []
            for k, sym in enumerate(("mi_malloc", "mi_malloc_aligned", "mi_zalloc", "mi_zalloc_aligned")):
                ev = f"tg_alloc{i}_{k}"
                r = subprocess.run(["perf", "probe", "-q", "-x", os.path.abspath(b), "--add", f"tgcount:{ev}={sym}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if r.returncode == 0:
                    added.append(f"tgcount:{ev}")
                    evs.append(f"tgcount:{ev}")
            p = port()
            open(f"{tmp}/tg{i}.toml", "w").write(gwconf.gateway_toml(tmp, i, p, be, "io_uring", feats))
            env = dict(os.environ, TOLLGATE_LOG="warn")
            g = subprocess.Popen([b, "--config", f"{tmp}/tg{i}.toml"], env=env, stderr=subprocess.DEVNULL)
            procs.append(g)
            gwconf.wait_ready(p, feats)
            gwconf.requests(p, 200, feats)  # warm: pools, caches
            out = f"{tmp}/stat{i}.txt"
            st = subprocess.Popen(["perf", "stat", "-x", ",", "-o", out, "-e",
                                   ",".join(evs + ["tgcount:clock"] + moves), "-p", str(g.pid)])
            time.sleep(0.5)
            gwconf.requests(p, a.requests, feats)
            st.send_signal(2)
            st.wait()
            counts = {}
            for line in open(out):
                f = line.split(",")
                if len(f) > 2 and f[0].strip().isdigit():
                    counts[f[2].split(":")[-1]] = int(f[0])
            allocs = sum(c for k, c in counts.items() if k.startswith(f"tg_alloc{i}_"))
            print(f"{b}: per request  allocations {allocs / a.requests:.2f}  "
                  f"clock reads {counts.get('clock', 0) / a.requests:.2f}  "
                  f"memmove calls {sum(c for k, c in counts.items() if k.startswith('memmove')) / a.requests:.2f}")
            g.terminate()
            g.wait()
            procs.remove(g)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        for e in added:
            subprocess.run(["perf", "probe", "-q", "-d", e], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
