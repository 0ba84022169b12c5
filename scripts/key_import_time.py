#!/usr/bin/env python3
"""Time of an API key import through the admin API: a one-shard gateway with an admin
listener, POST /apikeys/import of N generated rows (Amazon's CSV format), the wall time
until the answer. Only 127.0.0.1; stops the gateway it started.

  python3 scripts/key_import_time.py ROWS BINARY [BINARY ...]
"""
import os, socket, subprocess, time, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwconf
def run(binary, rows):
    tmp = f"/tmp/tollgate-keyimport-{os.path.basename(binary)}"
    subprocess.run(["rm", "-rf", tmp]); os.makedirs(tmp)
    p, a = gwconf.free_port(), gwconf.free_port()
    open(f"{tmp}/g.toml","w").write(f"""[server]
workers = 1
state_dir = "{tmp}/state"
[[listeners]]
name = "http"
addr = "127.0.0.1:{p}"
[admin]
addr = "127.0.0.1:{a}"
token_env = "TG_TOKEN"
[[apis]]
name = "api"
  [[apis.stages]]
  name = "prod"
  [[apis.routes]]
  route = "GET /x"
  integration = {{ type = "mock" }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "api", stage = "prod" }}]
[[usage_plans]]
name = "gold"
stages = ["api/prod"]
""")
    g = subprocess.Popen([binary, "--config", f"{tmp}/g.toml"], env=dict(os.environ, TG_TOKEN="t"), stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try: socket.create_connection(("127.0.0.1", a), timeout=1).close(); break
            except OSError: time.sleep(0.05)
        body = "Name,Key,Description,Enabled,UsagePlanIds\n" + "".join(f"c{i},ckey{i:024d},,true,gold\n" for i in range(rows))
        req = f"POST /apikeys/import HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\nContent-Type: text/csv\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
        t = time.time()
        s = socket.create_connection(("127.0.0.1", a)); s.sendall(req)
        out = b""
        while True:
            d = s.recv(65536)
            if not d: break
            out += d
        print(binary, rows, "rows:", out.split(b"\r\n")[0].decode(), f"{time.time()-t:.2f}s")
    finally:
        g.terminate(); g.wait()
for b in sys.argv[2:]:
    run(b, int(sys.argv[1]))
