#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by valgrind's callgrind: where CPU time
on a shared 2-core machine spreads ±15 % between rounds, the ratio of two builds measured in
one run of this script repeats to about 1 % (the same build twice: 0.996-0.998), so a change of
a few per cent in the gateway's own work shows. Absolute counts move by up to ~4 % between runs:
a shard's periodic work (timers, sweeps) runs by the clock, and valgrind's pace depends on what
else runs. Each build runs under callgrind in front of an nginx backend; after a warm-up the
counters are zeroed, N GETs of /small are sent one at a time (round robin over 4 keep-alive
connections; the builds run side by side and take the requests in alternated batches), and
the counters dumped.

Valgrind hides some CPU features from the program: SHA-256 runs in software under it (an API
key's hash shows as ~3,500 instructions; with the CPU's SHA extensions it is a few hundred).

  python3 scripts/instructions.py target/release/tollgate [/tmp/base-tollgate ...] \\
      [--requests 20000] [--features key,plan,log,header] [--top 30]

`--features tls` puts the listener on TLS 1.3 (the client a Python `ssl` socket, ALPN http/1.1),
`--features h2` HTTP/2 over it (ALPN h2; a minimal client in `gwconf.py`, one stream at a time
per connection, literal HPACK fields), so the TLS session's and HTTP/2's work per request count
too (AES-GCM runs with the CPU's AES instructions under valgrind, as outside).

Runs on the epoll driver: under valgrind the io_uring rings are not usable (it does not model
the memory the kernel writes), and the gateway's work per request (parsing, routing, the
pipeline, rewriting) is the same code on every driver; the I/O layer's share differs. Kernel
time is not counted: pair with `proxy_ab.py` (CPU time, same run) for the whole cost.
`--top` prints the functions with the most instructions of their own (per request).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwconf  # noqa: E402


def self_costs(path: str) -> collections.Counter:
    """Instructions of each function's own (calls excluded) in a callgrind output file."""
    names: dict = {}
    costs: collections.Counter = collections.Counter()
    fn = None
    call_line = False

    def name(v: str) -> str:
        m = re.match(r"\((\d+)\)(?: (.*))?", v)
        if not m:
            return v
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), m.group(1))

    for line in open(path):
        if line.startswith("fn="):
            fn = name(line[3:].rstrip("\n"))
        elif line.startswith("cfn="):
            name(line[4:].rstrip("\n"))
        elif line.startswith("calls="):
            call_line = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if len(parts) >= 2:
                if call_line:
                    call_line = False  # the callee's inclusive cost, not this function's
                else:
                    costs[fn] += int(parts[1])
    return costs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--features", default="", help=f"comma-separated, of {', '.join(gwconf.FEATURES)}")
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("--keep", help="copy each build's callgrind dump here (cgN), for callgrind_annotate")
    a = ap.parse_args()
    feats = [f for f in a.features.split(",") if f]
    gwconf.features(feats)
    for tool in ("valgrind", "callgrind_control", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (apt-get install valgrind nginx)")
    tmp = tempfile.mkdtemp()
    procs = []
    results = []
    try:
        be, nginx = gwconf.backend(tmp)
        procs.append(nginx)
        gws = []
        for i, b in enumerate(a.bins):
            p = gwconf.free_port()
            open(f"{tmp}/tg{i}.toml", "w").write(gwconf.gateway_toml(tmp, i, p, be, "epoll", feats))
            env = dict(os.environ, TOLLGATE_LOG="warn")
            g = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg{i}",
                                  b, "--config", f"{tmp}/tg{i}.toml"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(g)
            gws.append((b, p, g))
        for b, p, g in gws:
            gwconf.wait_ready(p, feats)
            gwconf.requests(p, 500, feats)  # warm: pools, caches, lazily built state
        for b, p, g in gws:
            subprocess.run(["callgrind_control", "-z", str(g.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Batches alternated between the builds, so that work that runs by the clock (a
        # shard's periodic tasks) falls on each alike.
        batch = max(1, min(1000, a.requests // 10))
        done = 0
        while done < a.requests:
            n = min(batch, a.requests - done)
            for b, p, g in gws:
                gwconf.requests(p, n, feats)
            done += n
        for i, (b, p, g) in enumerate(gws):
            subprocess.run(["callgrind_control", "-d", str(g.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            g.terminate()
            g.wait()
            procs.remove(g)
            dumps = [f for f in os.listdir(tmp) if f.startswith(f"cg{i}.")]
            if len(dumps) != 1:
                sys.exit(f"{b}: expected one callgrind dump, found {dumps}")
            costs = self_costs(f"{tmp}/{dumps[0]}")
            if a.keep:
                os.makedirs(a.keep, exist_ok=True)
                shutil.copy(f"{tmp}/{dumps[0]}", os.path.join(a.keep, f"cg{i}"))
            total = sum(costs.values()) / a.requests
            results.append(total)
            ratio = f"  ratio {total / results[0]:.3f}" if i else ""
            print(f"{b}: {total:,.0f} instructions per request{ratio}")
            for fn, c in costs.most_common(a.top):
                print(f"  {c / a.requests:9,.0f}  {100 * c / sum(costs.values()):5.1f} %  {fn[:130]}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
