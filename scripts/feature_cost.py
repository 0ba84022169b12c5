#!/usr/bin/env python3
"""Hot-path cost of a feature: the same mock route with and without it, same run, alternating
rounds; one worker pinned to CPU 1, wrk on CPU 0. Prints CPU µs per request (the time its
threads were on a CPU, from schedstat, over requests served) and req/s for each, and the ratio.

Features: `none` (the same plain mock route on both sides: with `--bin-without` an older build,
what a route using none of the features pays for them), `policy` (a five-entry resource policy), `cors` (an API's CORS configuration,
every request carrying an allowed Origin: the answer gets its CORS headers), `validation` (a route checking a 1 KiB JSON body against a model; both runs POST it),
`template` (the developer guide's PetStore response template over a three-pet mock answer),
`validation_template` (both: a 1 KiB body checked, then the answer rendered), `compression` (a stage compressing a 2 KiB JSON mock answer with gzip for every request;
both runs ask for gzip), `jwt` (a JWT authorizer, every request
carrying the same RS256 token: the shard's token cache answers after the first; the keys come
from a local JWKS server, and the token is signed here with the test fixtures' key),
`external` (a request authorizer whose answer the node caches: one call, then cache hits),
`iam` (SigV4: every request signed by botocore, verified in full — the signature is checked
per request, nothing is cached), `accesslog` (the built-in JSON access log to a file),
`observe` (the JSON access log to a file and 1 % tracing to an OTLP collector: what issue 16
budgets at 1.10x), `trace100` (every request traced and exported). The collector is a sink in
this process, pinned with wrk to CPU 0. `--bin-without` runs the "without" rounds on another
binary: an older build shows what the always-on per-route metrics cost.

  python3 scripts/feature_cost.py --feature jwt --bin target/release/tollgate [--rounds 5] [--seconds 5]
  python3 scripts/feature_cost.py --feature observe --bin-without /tmp/old/tollgate

`--one-process` (route-level features: validation, template, validation_template): one
gateway serves both routes, `/m` with the feature and `/n` without, and the rounds alternate
wrk between them (`--rounds` pairs of `--seconds` each). Two processes differ by more than
the feature on a shared VM (where each one's memory lands, what the host runs meanwhile);
one process and short alternating rounds leave the feature as the difference, and the
median of the per-round ratios is the figure to quote.

  python3 scripts/feature_cost.py --feature validation_template --one-process --rounds 15 --seconds 2
"""
import argparse, atexit, base64, http.server, json, os, re, socket, subprocess, tempfile, threading, time

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "jwt")
ISSUER = "https://idp.example.test"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def cpu_ns(pid):
    """The process's threads' time on a CPU, in ns (schedstat: exact, where the tick counts
    of /proc/PID/stat are sampled)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def rs256_token():
    """A token signed with tests/fixtures/jwt/rsa-a.pem (Python's `cryptography`)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    key = serialization.load_pem_private_key(open(os.path.join(FIXTURES, "rsa-a.pem"), "rb").read(), None)
    head = b64(json.dumps({"alg": "RS256", "kid": "rsa-a", "typ": "JWT"}).encode())
    now = int(time.time())
    body = b64(json.dumps({"iss": ISSUER, "aud": "petstore", "sub": "user-1", "iat": now,
                           "exp": now + 3600, "scope": "pets:read"}).encode())
    sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64(sig)}"


def jwks_server():
    """Serves the fixtures' JWKS on 127.0.0.1 (a thread of this process); returns its port."""
    doc = open(os.path.join(FIXTURES, "jwks.json"), "rb").read()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(doc)))
            self.end_headers()
            self.wfile.write(doc)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def authorizer_server():
    """An external authorizer on 127.0.0.1 (a thread of this process) that allows everyone."""
    answer = b'{"isAuthorized": true, "context": {"tenant": "t1"}}'

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def collector_server():
    """An OTLP/HTTP sink on 127.0.0.1 (a thread of this process): reads each export, answers 200."""
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def observe_top(feature, tmp, port, collector):
    """Top-level tables of the observability features."""
    log = f'[access_log]\npath = "{tmp}/access-{port}.log"\nformat = "json"\n'
    trace = lambda sample: f'[tracing]\notlp_endpoint = "http://127.0.0.1:{collector}/v1/traces"\nsample = {sample}\n'
    return {"accesslog": log, "observe": log + trace(0.01), "trace100": trace(1.0)}[feature]


def feature_keys(feature, on, port):
    if not on or feature in ("accesslog", "observe", "trace100", "none"):
        return ""
    if feature == "external":
        return f"""default_authorizer = "partners"
  [[apis.authorizers]]
  name = "partners"
  type = "request"
  uri = "http://127.0.0.1:{port}/authorize"
  identity_sources = ["$request.header.x-partner-token"]
  ttl = "300s"
"""
    if feature == "cors":
        return ('cors = { allow_origins = ["https://app.example.test", "http://*"], allow_methods = ["GET", "POST"], '
                'allow_headers = ["content-type", "authorization"], expose_headers = ["x-request-id"], max_age = "10m", '
                'allow_credentials = true }')
    if feature == "policy":
        return 'resource_policy = { allow = ["127.0.0.0/8", "10.0.0.0/8", "::1/128"], deny = ["10.66.0.0/16", "192.0.2.0/24"] }'
    return f"""default_authorizer = "users"
  [[apis.authorizers]]
  name = "users"
  type = "jwt"
  issuer = "{ISSUER}"
  audience = ["petstore"]
  jwks_uri = "http://127.0.0.1:{port}/jwks"
"""


# A 1 KiB JSON body (validation) and a 2 KiB JSON answer (compression).
PET_1K = json.dumps({"name": "rex", "tag": "dog", "notes": ["n" * 60 for _ in range(14)]})
PETS = '[{"id": 1, "type": "dog", "price": 249.99}, {"id": 2, "type": "cat", "price": 124.99}, {"id": 3, "type": "fish", "price": 0.99}]'
ANSWER_2K = json.dumps([{"name": "rex", "tag": "dog", "id": i} for i in range(50)])
PET_SCHEMA = ('{"type":"object","required":["name"],"properties":{"name":{"type":"string"},'
              '"tag":{"type":"string"},"notes":{"type":"array","items":{"type":"string","maxLength":100}}}}')


# `--integration http`: the template's answer comes from a backend (nginx on CPU 0) instead of a
# mock, the route a gateway serves in front of a service.
BACKEND = {"port": None}


def backend(tmp):
    """nginx on CPU 0 answering every request with the three pets as JSON; returns its process."""
    port = free_port()
    conf = os.path.join(tmp, "backend.conf")
    with open(conf, "w") as f:
        f.write(f"""
daemon off; master_process off; worker_processes 1; error_log stderr error; pid {tmp}/backend.pid;
events {{ worker_connections 10000; }}
http {{
  access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_buffer_size 64k; client_max_body_size 1m;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /pets {{ default_type application/json; return 200 '{PETS}'; }}
  }}
}}
""")
    p = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
    atexit.register(lambda: (p.terminate(), p.wait(timeout=20)))
    wait_port(port, "the nginx backend")
    BACKEND["port"] = port
    return p


def integration(responses, body_key):
    """The route's integration: a mock with `body_key` as its answer, or (with a backend
    running) an http integration to it."""
    if BACKEND["port"]:
        return f'integration = {{ type = "http", uri = "http://127.0.0.1:{BACKEND["port"]}/pets"{responses} }}'
    return f"integration = {{ type = \"mock\", body = '{body_key}'{responses} }}"


def variant(feature, on):
    """(api keys, route key, route keys, stage keys, mock body) of the body-shaped features."""
    if feature == "validation":
        model = f"[[apis.models]]\nname = \"Pet\"\nschema = '{PET_SCHEMA}'\n"
        route = 'request_validator = "body"\n  request_models = { "application/json" = "Pet" }' if on else ""
        return model, "POST /m", route, "", "ok"
    if feature in ("template", "validation_template"):
        # The developer guide's PetStore response template over a three-pet mock answer.
        tpl = ("#set($inputRoot = $input.path('$'))[#foreach($elem in $inputRoot){\"description\": "
               "\"Item $elem.id is a $elem.type.\", \"askingPrice\": $elem.price}#if($foreach.hasNext),#end#end]")
        responses = f', responses = [ {{ templates = {{ "application/json" = {json.dumps(tpl)} }} }} ]' if on else ""
        route = integration(responses, PETS)
        model, rkey = "", "GET /m"
        if feature == "validation_template":
            model = f"[[apis.models]]\nname = \"Pet\"\nschema = '{PET_SCHEMA}'\n"
            rkey = "POST /m"
            if on:
                route = 'request_validator = "body"\n  request_models = { "application/json" = "Pet" }\n  ' + route
        return model, rkey, route, "", None
    if feature == "compression":
        stage = 'compression = { min_size = "1KiB" }' if on else ""
        return "", "GET /m", 'integration = { type = "mock", body = \'' + ANSWER_2K + '\', headers = { "content-type" = "application/json" } }', stage, None
    raise ValueError(feature)


def conf(tmp, port, keys, top="", route="", route_key="GET /m", stage="", body="ok", also=None):
    """The gateway's config: one API, one stage, the route `route_key` (and, with `also` =
    (route key, route keys), a second route with the same integration)."""
    integration = f'integration = {{ type = "mock", body = "{body}" }}' if body is not None else ""
    routes = [(route_key, route)] + ([also] if also else [])
    route_tables = "".join(f"""
  [[apis.routes]]
  route = "{k}"
  {r}
  {integration}""" for k, r in routes)
    path = os.path.join(tmp, f"gw-{port}.toml")
    with open(path, "w") as f:
        f.write(f"""
[server]
workers = 1
state_dir = "{tmp}/data-{port}"
[[listeners]]
name = "http"
addr = "127.0.0.1:{port}"
{top}
[[apis]]
name = "a"
{keys}
  [[apis.stages]]
  name = "p"
  {stage}{route_tables}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "a", stage = "p" }}]
""")
    return path


def conf_both(tmp, port, feature):
    """One API with the feature's route at /m and the same route without it at /n."""
    keys, rkey, route_on, _, body = variant(feature, True)
    _, _, route_off, _, _ = variant(feature, False)
    method = rkey.split()[0]
    return conf(tmp, port, keys, route=route_on, route_key=f"{method} /m", body=body,
                also=(f"{method} /n", route_off))


def wait_port(port, what):
    end = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); return
        except OSError:
            if time.time() > end: raise SystemExit(f"{what} did not start")
            time.sleep(0.05)


def start(binary, path, port):
    """A gateway pinned to CPU 1, once it accepts connections."""
    p = subprocess.Popen(["taskset", "-c", "1", binary, "--config", path],
                         env=dict(os.environ, TOLLGATE_LOG="warn", TG_BENCH_TOKEN="bench"),
                         stderr=subprocess.DEVNULL)
    wait_port(port, "the gateway")
    return p


def run_wrk(a, p, port, path, wrk_args, name):
    """One wrk run against `path`: (CPU µs per request, req/s)."""
    t0 = cpu_ns(p.pid)
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c32", f"-d{a.seconds}s", *wrk_args,
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{name}: some answers were not 2xx, the run measured errors:\n{out}")
    t1 = cpu_ns(p.pid)
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    return (t1 - t0) / 1e3 / reqs, reqs / a.seconds, (t1 - t0) / 1e3, reqs


def one_process(a, tmp, wrk_args):
    """Both routes in one gateway; rounds alternate between them (see the module's doc)."""
    if a.feature not in ("validation", "template", "validation_template"):
        raise SystemExit("--one-process: validation, template or validation_template")
    port = free_port()
    p = start(a.bin, conf_both(tmp, port, a.feature), port)
    results = {"without": [], "with": []}
    try:
        # A warm-up of each route: the first requests fault in code and memory.
        warm = argparse.Namespace(seconds=1)
        run_wrk(warm, p, port, "/m", wrk_args, "with")
        run_wrk(warm, p, port, "/n", wrk_args, "without")
        for r in range(a.rounds):
            for name in (("without", "with") if r % 2 == 0 else ("with", "without")):
                results[name].append(run_wrk(a, p, port, "/m" if name == "with" else "/n", wrk_args, name))
    finally:
        p.terminate(); p.wait(timeout=20)
    return results


def iam_top(tmp, admin_port):
    """[admin] and [aws_iam] (both runs have them; only the route's authorization differs)."""
    key_file = os.path.join(tmp, "iam.key")
    with open(key_file, "w") as f:
        f.write(base64.b64encode(b"k" * 32).decode())
    return f"""[admin]
addr = "127.0.0.1:{admin_port}"
token_env = "TG_BENCH_TOKEN"
[aws_iam]
region = "us-east-1"
secrets_key_file = "{key_file}"
"""


def iam_headers(port, admin_port):
    """Creates an access key through the admin API and signs GET /m with botocore: the signed
    headers, valid for five minutes (the runs together take less)."""
    import urllib.request
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    body = json.dumps({"name": f"bench{port}", "policy": {"Statement": [
        {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"}]}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{admin_port}/accesskeys", data=body, method="POST",
                                 headers={"authorization": "Bearer bench", "content-type": "application/json"})
    key = json.load(urllib.request.urlopen(req, timeout=10))
    r = AWSRequest(method="GET", url=f"http://127.0.0.1:{port}/m")
    SigV4Auth(Credentials(key["id"], key["secretAccessKey"]), "execute-api", "us-east-1").add_auth(r)
    return [x for k, v in r.headers.items() if k.lower() != "host" for x in ("-H", f"{k}: {v}")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--bin-without", default=None, help="the binary of the rounds without (default --bin)")
    ap.add_argument("--one-process", action="store_true", help="both routes in one gateway, rounds alternating")
    ap.add_argument("--integration", choices=["mock", "http"], default="mock",
                    help="template, validation_template: the answer from a mock or from a backend (nginx on CPU 0)")
    ap.add_argument("--feature", choices=["none", "policy", "cors", "validation", "template", "validation_template", "compression", "jwt", "external", "iam", "accesslog", "observe", "trace100"], default="policy")
    a = ap.parse_args()
    # This process (the collector sink, the authorizer, the JWKS server) shares CPU 0 with wrk.
    os.sched_setaffinity(0, {0})
    tmp = tempfile.mkdtemp(prefix=f"tollgate-{a.feature}-")
    jwks_port = {"jwt": jwks_server, "external": authorizer_server,
                 "observe": collector_server, "trace100": collector_server}.get(a.feature, lambda: 0)()
    wrk_args = []
    if a.feature == "jwt":
        wrk_args = ["-H", f"Authorization: Bearer {rs256_token()}"]
    if a.feature == "external":
        wrk_args = ["-H", "x-partner-token: partner-7f3a9c"]
    if a.feature == "cors":
        # Both runs get the header; only the "with" API answers it.
        wrk_args = ["-H", "Origin: https://app.example.test"]
    if a.feature in ("validation", "validation_template"):
        # Both runs POST the same 1 KiB JSON body; only the "with" route checks it.
        script = os.path.join(tmp, "post.lua")
        with open(script, "w") as f:
            f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(PET_1K)}\nwrk.headers["Content-Type"] = "application/json"\n')
        wrk_args = ["-s", script]
    if a.feature == "compression":
        wrk_args = ["-H", "Accept-Encoding: gzip"]
    results = {"without": [], "with": []}
    if a.integration == "http":
        if a.feature not in ("template", "validation_template"):
            raise SystemExit("--integration http: template or validation_template")
        backend(tmp)
    if a.one_process:
        results = one_process(a, tmp, wrk_args)
    for r in range(0 if a.one_process else a.rounds):
        for name in (("without", "with") if r % 2 == 0 else ("with", "without")):
            port = free_port()
            if a.feature == "iam":
                admin_port = free_port()
                route = 'authorization = "aws_iam"' if name == "with" else ""
                path = conf(tmp, port, "", iam_top(tmp, admin_port), route)
            elif a.feature in ("accesslog", "observe", "trace100"):
                top = observe_top(a.feature, tmp, port, jwks_port) if name == "with" else ""
                path = conf(tmp, port, "", top)
            elif a.feature in ("validation", "template", "validation_template", "compression"):
                keys, rkey, route, stage, body = variant(a.feature, name == "with")
                path = conf(tmp, port, keys, route=route, route_key=rkey, stage=stage, body=body)
            else:
                path = conf(tmp, port, feature_keys(a.feature, name == "with", jwks_port))
            binary = a.bin_without if (name == "without" and a.bin_without) else a.bin
            p = start(binary, path, port)
            if a.feature == "iam":
                wrk_args = iam_headers(port, admin_port)
            try:
                results[name].append(run_wrk(a, p, port, "/m", wrk_args, name))
            finally:
                p.terminate(); p.wait(timeout=20)
            # Access logs of a few hundred MB per round: gone before the next one.
            log = os.path.join(tmp, f"access-{port}.log")
            if os.path.exists(log):
                os.remove(log)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    for name, rs in results.items():
        print(f"{name:8} {a.feature}: {med([r[0] for r in rs]):.2f} µs CPU/request, {med([r[1] for r in rs]):.0f} req/s (median of {len(rs)})")
    w, wo = med([r[0] for r in results["with"]]), med([r[0] for r in results["without"]])
    print(f"ratio with/without: {w / wo:.3f}")
    # Each round runs both sides back to back: the ratio within a round cancels what drifts
    # between rounds (the machine's other load, its clock), so its median is the steadier figure.
    if os.environ.get("FEATURE_COST_VERBOSE"):
        for i, (x, y) in enumerate(zip(results["with"], results["without"])):
            print(f"  round {i}: with {x[0]:.2f} µs {x[1]:.0f}/s, without {y[0]:.2f} µs {y[1]:.0f}/s")
    paired = sorted(a[0] / b[0] for a, b in zip(results["with"], results["without"]))
    print(f"paired ratio (median of {len(paired)} rounds): {med(paired):.3f}  "
          f"[{', '.join(f'{x:.3f}' for x in paired)}]")
    if a.one_process:
        # All rounds together: CPU over requests for each side (the machine's speed drifts
        # between rounds; alternating short rounds spreads the drift over both sides).
        per = {k: sum(r[2] for r in v) / sum(r[3] for r in v) for k, v in results.items()}
        print(f"all rounds: with {per['with']:.2f} µs, without {per['without']:.2f} µs, "
              f"ratio {per['with'] / per['without']:.3f}")
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
