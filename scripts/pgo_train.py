#!/usr/bin/env python3
"""Profile-guided optimisation, the training run: drives an instrumented Tollgate through the
per-request measurement workloads (`gwconf.py`: plain keep-alive GETs; key, plan, combined
access log and header; a new connection per request; TLS 1.3; HTTP/2 over TLS), one gateway
process per workload, each stopped with SIGTERM so that it writes its profile.

    apt-get install llvm-22      # llvm-profdata of rustc's LLVM major version (`rustc -vV`)
    CARGO_TARGET_DIR=/tmp/pgo-gen RUSTFLAGS="-Cprofile-generate=/tmp/pgo-data" \\
        cargo build --release --bin tollgate
    python3 scripts/pgo_train.py /tmp/pgo-gen/release/tollgate /tmp/pgo-data
    llvm-profdata-22 merge -o /tmp/pgo-data/merged.profdata /tmp/pgo-data/*.profraw
    CARGO_TARGET_DIR=/tmp/pgo-use RUSTFLAGS="-Cprofile-use=/tmp/pgo-data/merged.profdata" \\
        cargo build --release --bin tollgate

Needs nginx (the backend), wrk and h2load. See bench/HISTORY.md for what it measured.
"""
import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwconf  # noqa: E402

FEATURE_SETS = [(), ("key", "plan", "clog", "header"), ("close",), ("tls",), ("h2",)]


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: pgo_train.py INSTRUMENTED_TOLLGATE PROFILE_DIR")
    binary, out = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="pgo-")
    be, backend = gwconf.backend(tmp)
    try:
        for i, names in enumerate(FEATURE_SETS):
            port = gwconf.free_port()
            conf = f"{tmp}/g{i}.toml"
            with open(conf, "w") as f:
                f.write(gwconf.gateway_toml(tmp, i, port, be, "io_uring", names))
            env = dict(os.environ, LLVM_PROFILE_FILE=f"{out}/%p-%m.profraw")
            gw = subprocess.Popen([binary, "--config", conf], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                gwconf.wait_ready(port, names)
                f = gwconf.features(names)
                if "h2" in f:
                    cmd = ["h2load", "-n", "100000", "-c", "16", "-m", "4", f"https://127.0.0.1:{port}/small"]
                else:
                    scheme = "https" if "tls" in f else "http"
                    cmd = ["wrk", "-t1", "-c32", "-d5s", f"{scheme}://127.0.0.1:{port}/small"]
                    cmd += gwconf.key_headers(names)
                    if "close" in f:
                        cmd += ["-H", "Connection: close"]
                subprocess.run(cmd, check=True, capture_output=True, timeout=120)
                print("trained:", ",".join(names) or "plain", flush=True)
            finally:
                gw.send_signal(signal.SIGTERM)
                gw.wait(timeout=60)
    finally:
        backend.terminate()
        backend.wait()


if __name__ == "__main__":
    main()
