#!/usr/bin/env python3
"""A minimal OTLP/HTTP traces receiver for Tollgate's tests.

Listens on 127.0.0.1 (an ephemeral port, printed first as `PORT <n>`), decodes each
`POST /v1/traces` body with the official protobuf definitions (PyPI `opentelemetry-proto`),
and prints one JSON line per span: ids in hex, name, kind, times, attributes, status.
`POST /fail` makes the next export answer 503; `POST /fail?status=S&count=N&retry_after=V`
the next N answer S, with `Retry-After: V` if given. Each export answered so prints
`{"refused": S}`. Exits when its standard input closes.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

lock = threading.Lock()
fail_next = [0]
fail_with = [503, None]


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path.startswith("/fail"):
            q = parse_qs(urlparse(self.path).query)
            with lock:
                fail_next[0] += int(q.get("count", ["1"])[0])
                fail_with[0] = int(q.get("status", ["503"])[0])
                fail_with[1] = q.get("retry_after", [None])[0]
            self.send_response(204)
            self.end_headers()
            return
        with lock:
            failing = fail_next[0] > 0
            if failing:
                fail_next[0] -= 1
                status, after = fail_with
                print(json.dumps({"refused": status}), flush=True)
        if failing:
            self.send_response(status)
            if after is not None:
                self.send_header("retry-after", after)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if self.headers.get("content-type") != "application/x-protobuf":
            self.send_response(415)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        lines = []
        for rs in req.resource_spans:
            resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    lines.append(json.dumps({
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "trace_state": s.trace_state,
                        "name": s.name,
                        "kind": s.kind,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "attributes": {kv.key: value(kv.value) for kv in s.attributes},
                        "status": s.status.code,
                        "flags": s.flags,
                        "scope": ss.scope.name,
                        "service": resource.get("service.name"),
                    }))
        with lock:
            for line in lines:
                print(line, flush=True)
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"PORT {server.server_address[1]}", flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
