#!/usr/bin/env python3
"""How long a request template takes that tests 10,000 strings against a regular expression
(`$i.sku.matches('[A-Z]{3}-[0-9]{4,8}')` in a nested #foreach), beside the same loop with
`startsWith`: templates keep the last 32 patterns each shard compiled, so a literal pattern
is compiled once, not per call. Milliseconds per request, three rounds each, one shard.

  python3 scripts/template_regex_time.py target/release/tollgate [OTHER_BUILD ...]
"""
import json, socket, subprocess, sys, tempfile, time
def free():
    s = socket.socket(); s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close(); return p
def run(BIN):
    tmp = tempfile.mkdtemp()
    port = free()
    t1 = "#set($n = 0)#foreach($o in $input.path('$.orders'))#foreach($i in $o.items)#if($i.sku.matches('[A-Z]{3}-[0-9]{4,8}'))#set($n = $n + 1)#end#end#end{\"n\": $n}"
    t2 = t1.replace(".matches('[A-Z]{3}-[0-9]{4,8}')", ".startsWith('ABC')")
    cfg = f'''[server]
    workers = 1
    state_dir = "{tmp}/state"
    [[listeners]]
    name = "http"
    addr = "127.0.0.1:{port}"
    [[apis]]
    name = "a"
      [[apis.stages]]
      name = "prod"
      [[apis.routes]]
      route = "POST /re"
      integration = {{ type = "mock", request_templates = {{ "application/json" = {json.dumps(t1)} }} }}
      [[apis.routes]]
      route = "POST /nore"
      integration = {{ type = "mock", request_templates = {{ "application/json" = {json.dumps(t2)} }} }}
    [[domains]]
    host = "*"
    mappings = [{{ base_path = "", api = "a", stage = "prod" }}]
    '''
    open(f'{tmp}/c.toml', 'w').write(cfg)
    p = subprocess.Popen([BIN, '--config', f'{tmp}/c.toml'], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(('127.0.0.1', port)).close(); break
        except OSError: time.sleep(0.1)
    body = json.dumps({"orders": [{"items": [{"sku": "ABC-1234"}] * 1000}] * 10}).encode()
    def post(path):
        s = socket.create_connection(('127.0.0.1', port)); t = time.time()
        s.sendall(b'POST ' + path.encode() + b' HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: ' + str(len(body)).encode() + b'\r\n\r\n' + body)
        out = b''
        while True:
            d = s.recv(65536)
            if not d: break
            out += d
        return time.time() - t, out.split(b'\r\n')[0]
    for path in ['/nore', '/re'] * 3:
        dt, line = post(path)
        print(BIN, path, f'{dt*1000:.0f} ms', line.decode())
    p.terminate(); p.wait()


for b in sys.argv[1:]:
    run(b)
