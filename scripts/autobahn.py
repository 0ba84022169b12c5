#!/usr/bin/env python3
"""Autobahn|Testsuite (fuzzingclient) against a Tollgate WebSocket API.

What it runs: an echo backend (ThreadingHTTPServer, HTTP/1.1 keep-alive: each POST is
answered 200 with its body byte for byte), a gateway with one worker whose WebSocket API
routes every message to `$default` -> http integration -> the backend, with
`route_response = true` (so the gateway echoes: text stays text, binary stays binary), and
limits raised to 16 MiB frames / 64 MiB messages (the 9.* cases send up to 16 MiB).
Then `wstest -m fuzzingclient` with every case but 12.* and 13.* (permessage-deflate, not
offered). Prints counts by behavior and every case whose behavior (or behaviorClose) is not
OK / NON-STRICT / INFORMATIONAL, with the case's description; exits 1 if any behavior is
(a close-only miss is listed, not fatal). Stops what it started by PID. Reports (HTML and
JSON), the gateway's log and wstest's stay in the temp dir it prints. About 25 s with
the debug binary (the 9.* 16 MiB cases dominate).

wstest is Python 2.7 only (autobahntestsuite 25.10.1 still is: `import _version`, Twisted
19.10), so `pip install` on Python 3 gives a wstest that cannot import. `--setup` installs
it with a Python 2.7 interpreter (pyenv's 2.7.18 here; `--py2` to name another) by
`pip install --target /tmp/autobahn-py2/site`, with the versions it pins itself; then:

  python3 scripts/autobahn.py --setup --bin target/debug/tollgate
  python3 scripts/autobahn.py --bin target/debug/tollgate --cases '1.*,2.*' --timeout 600
"""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PY2_DIR = "/tmp/autobahn-py2"
PINS = ["autobahntestsuite==25.10.1"]  # it pins its own (Twisted 19.10, autobahn 0.10.9, ...)
GOOD = {"OK", "NON-STRICT", "INFORMATIONAL"}


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def setup(py2):
    site = os.path.join(PY2_DIR, "site")
    subprocess.check_call([py2, "-m", "pip", "install", "-q", "--no-warn-script-location",
                           "--target", site] + PINS)
    with open(os.path.join(PY2_DIR, "wstest"), "w") as f:  # site dir so zope's .pth is read
        f.write(f"#!{py2}\nimport site, sys\nsite.addsitedir({site!r})\n"
                "from autobahntestsuite.wstest import run\nsys.exit(run())\n")
    os.chmod(os.path.join(PY2_DIR, "wstest"), 0o755)


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms Nagle/delayed-ACK stall

    def do_POST(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(n); self.rfile.readline()
            body = bytes(body)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", self.headers.get("Content-Type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def wait_port(port, proc, secs=30):
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"tollgate exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"port {port} never accepted")


def stop(proc, secs=10):
    if proc and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM); proc.wait(secs)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait()
        except ProcessLookupError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--wstest", default=None, help=f"default {PY2_DIR}/wstest, else wstest on PATH")
    ap.add_argument("--setup", action="store_true", help="install wstest (Python 2.7) first")
    pyenv27 = os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python2.7")
    ap.add_argument("--py2", default=pyenv27 if os.path.exists(pyenv27) else "python2.7")
    ap.add_argument("--cases", default="*", help="comma-separated, e.g. '1.*,2.*'")
    ap.add_argument("--exclude", default="12.*,13.*")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds for wstest")
    a = ap.parse_args()
    if a.setup:
        setup(a.py2)
    wstest = a.wstest or (os.path.join(PY2_DIR, "wstest") if os.path.exists(os.path.join(PY2_DIR, "wstest"))
                          else shutil.which("wstest"))
    if not wstest:
        sys.exit("no wstest: run with --setup (needs Python 2.7) or --wstest PATH")
    tmp = tempfile.mkdtemp(prefix="tollgate-autobahn-")
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    backend.daemon_threads = True
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = free_port()
    conf = os.path.join(tmp, "gw.toml")
    with open(conf, "w") as f:
        f.write(f"""[server]
workers = 1
state_dir = "{tmp}/state"
[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
[limits]
websocket_frame = "16MiB"
websocket_message = "64MiB"
max_body = "64MiB"
[[upstreams]]
name = "echo"
targets = ["127.0.0.1:{backend.server_address[1]}"]
[[apis]]
name = "echo"
kind = "websocket"
  [[apis.stages]]
  name = "prod"
  [[apis.routes]]
  route = "$default"
  route_response = true
  integration = {{ type = "http", uri = "http://echo/echo", timeout = "29s" }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "echo", stage = "prod" }}]
""")
    spec = {"outdir": f"{tmp}/reports", "servers": [{"agent": "tollgate", "url": f"ws://127.0.0.1:{port}"}],
            "cases": a.cases.split(","), "exclude-cases": [c for c in a.exclude.split(",") if c],
            "exclude-agent-cases": {}}
    with open(f"{tmp}/spec.json", "w") as f:
        json.dump(spec, f, indent=1)
    gw = ws = None
    start = time.time()
    try:
        env = dict(os.environ, TOLLGATE_LOG=os.environ.get("TOLLGATE_LOG", "warn"))
        with open(f"{tmp}/tollgate.log", "wb") as log:
            gw = subprocess.Popen([a.bin, "--config", conf], env=env, stdout=log, stderr=log,
                                  start_new_session=True)
        wait_port(port, gw)
        print(f"tollgate pid {gw.pid} on {port}, backend on {backend.server_address[1]}, dir {tmp}", flush=True)
        with open(f"{tmp}/wstest.log", "wb") as log:
            ws = subprocess.Popen([wstest, "-m", "fuzzingclient", "-s", "spec.json"], cwd=tmp,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                ws.wait(a.timeout)
            except subprocess.TimeoutExpired:
                print(f"wstest still running after {a.timeout}s: stopped; partial results", flush=True)
                stop(ws)
    finally:
        stop(ws); stop(gw); backend.shutdown()
    wall = time.time() - start
    try:
        with open(f"{tmp}/reports/index.json") as f:
            results = json.load(f)["tollgate"]
    except (OSError, KeyError, ValueError) as e:
        print(f"no results ({e}); see {tmp}/wstest.log and {tmp}/tollgate.log"); sys.exit(1)
    counts, bad = {}, []
    for case, r in results.items():
        counts[r["behavior"]] = counts.get(r["behavior"], 0) + 1
        if r["behavior"] not in GOOD or r.get("behaviorClose") not in GOOD:
            bad.append((case, r))
    key = lambda c: [int(x) for x in c[0].split(".")]
    print(f"{len(results)} cases in {wall:.0f}s: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for case, r in sorted(bad, key=key):
        desc = ""
        if r.get("reportfile"):
            try:
                with open(os.path.join(tmp, "reports", r["reportfile"])) as f:
                    desc = json.load(f).get("description", "")
            except (OSError, ValueError):
                pass
        print(f"  {case}: {r['behavior']} / close {r.get('behaviorClose')}: {' '.join(desc.split())[:160]}")
    print(f"reports: {tmp}/reports/index.html; tollgate log {tmp}/tollgate.log")
    sys.exit(1 if any(r["behavior"] not in GOOD for _, r in bad) else 0)


if __name__ == "__main__":
    main()
